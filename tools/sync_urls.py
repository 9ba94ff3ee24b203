#!/usr/bin/env python
"""Write the repository and docs URLs, named once in pyproject.toml, everywhere they appear.

`[project.urls]` Repository and Documentation are the one place (nbdev 3 derives its user, repo and doc
host from them). From there this tool writes: the Colab notebooks' "Open in Colab" badges, their install
cell (the repository until `[tool.restore_nb] pypi = true`, PyPI after the first release), their links to
the docs, their GPU runtime metadata; the docs site's `nbs/nbdev.yml`, the navbar link of
`nbs/_quarto.yml`, and the install and Colab links of the home page `nbs/index.ipynb`. README.md takes the docs
URL from the same place (tools/make_readme.py).

    python tools/sync_urls.py           # rewrite what differs
    python tools/sync_urls.py --check   # exit 1, naming the files, if anything differs
"""
import argparse, json, re, sys, tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL_MARK = '# restore_nb: install'


def project(root=ROOT) -> dict:
    cfg = tomllib.loads((root / 'pyproject.toml').read_text())
    urls = cfg['project']['urls']
    git = urls['Repository'].rstrip('/')
    m = re.match(r'https://github\.com/([^/]+)/([^/]+)$', git)
    if not m:
        raise SystemExit(f"pyproject.toml: [project.urls] Repository must be https://github.com/USER/REPO, got {git}")
    return dict(git=git, user=m[1], repo=m[2], docs=urls['Documentation'].rstrip('/') + '/',
                branch=cfg.get('tool', {}).get('nbdev', {}).get('branch', 'main'),
                pypi=bool(cfg.get('tool', {}).get('restore_nb', {}).get('pypi', False)), name=cfg['project']['name'])


def install_cell(p: dict) -> str:
    if p['pypi']:
        what = f"# restore_nb is installed from PyPI ({p['name']}); WHEEL installs a wheel file instead."
        sources = f"['{p['name']}']"
    else:
        what = (f"# restore_nb is not on PyPI yet: until its first release this installs from the repository\n"
                f"# {p['git']} (WHEEL: a wheel file instead, e.g. one built with `make wheel`).")
        sources = f"['git+{p['git']}.git']"
    return f'''{INSTALL_MARK} (Colab only; PyTorch is already on Colab's runtime, and a re-run skips this)
{what}
import importlib.util
WHEEL = ''   # e.g. '/content/drive/MyDrive/restore_nb/wheels/restore_nb-0.3.0-py3-none-any.whl'
if IN_COLAB and importlib.util.find_spec('restore_nb') is None:
    if WHEEL.startswith('/content/drive/'):
        from google.colab import drive
        drive.mount('/content/drive')
    for source in ([WHEEL] if WHEEL else {sources}):
        r = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', source], capture_output=True, text=True)
        if r.returncode == 0:
            print(f'restore_nb installed from {{source}}')
            break
        print(f'pip could not install {{source}}:', (r.stderr.strip().splitlines() or ['no message'])[-1])
    else: raise RuntimeError('restore_nb is not installed; set WHEEL to a restore_nb wheel and run this cell again')'''


def _src(c): return ''.join(c['source']) if isinstance(c['source'], list) else c['source']


def _norm(nb: dict) -> dict:
    "A notebook with every source joined (how nbdev-clean splits lines does not matter here)."
    return {**nb, 'cells': [{**c, 'source': _src(c)} for c in nb['cells']]}


def sync_notebook(path: Path, p: dict) -> dict:
    "The notebook with badge, install cell, docs links and GPU metadata from the project's URLs."
    nb = json.loads(path.read_text())
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{p['user']}/{p['repo']}/blob/{p['branch']}/colab/{path.name})")
    for c in nb['cells']:
        s = _src(c)
        if c['cell_type'] == 'markdown':
            s = re.sub(r'^\[!\[Open In Colab\]\(.*$', badge, s, flags=re.M)
            s = re.sub(r'https://[A-Za-z0-9-]+\.github\.io/[A-Za-z0-9._-]+/', p['docs'], s)
        elif s.startswith(INSTALL_MARK): s = install_cell(p)
        c['source'] = s
    nb['metadata'].update(accelerator='GPU', colab={'gpuType': 'T4', 'provenance': []})
    return nb


def sync_site(root: Path, p: dict) -> dict:
    out = {}
    f = root / 'nbs' / 'nbdev.yml'
    s = f.read_text()
    s = re.sub(r'site-url: ".*"', f'site-url: "{p["docs"].rstrip("/")}"', s)
    s = re.sub(r'repo-url: ".*"', f'repo-url: "{p["git"]}"', s)
    out[f] = s
    f = root / 'nbs' / '_quarto.yml'
    out[f] = re.sub(r'href: "https://github\.com/[^"]*"', f'href: "{p["git"]}"', f.read_text())
    f = root / 'nbs' / 'index.ipynb'                      # the home page (and README.md): install and Colab links
    s = re.sub(r'git\+https://github\.com/[\w-]+/[\w.-]+?\.git', f'git+{p["git"]}.git', f.read_text())
    out[f] = re.sub(r'https://colab\.research\.google\.com/github/[\w-]+/[\w.-]+/blob/[\w.-]+/',
                    f"https://colab.research.google.com/github/{p['user']}/{p['repo']}/blob/{p['branch']}/", s)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true', help='report differences instead of writing')
    ap.add_argument('--root', default=str(ROOT))
    a = ap.parse_args(argv)
    root = Path(a.root)
    p = project(root)
    want = {nb: sync_notebook(nb, p) for nb in sorted((root / 'colab').glob('*.ipynb'))}
    want.update(sync_site(root, p))

    def differs(f, new):
        if isinstance(new, str): return f.read_text() != new
        return _norm(json.loads(f.read_text())) != _norm(new)
    stale = [f for f, new in want.items() if differs(f, new)]
    if a.check:
        for f in stale: print(f"{f.relative_to(root)}: differs from pyproject.toml's URLs (run tools/sync_urls.py)")
        return 1 if stale else 0
    for f in stale:
        new = want[f]
        f.write_text(new if isinstance(new, str) else json.dumps(_norm(new), indent=1, ensure_ascii=False) + '\n')
        print(f"wrote {f.relative_to(root)}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
