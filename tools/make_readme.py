#!/usr/bin/env python
"""Generate README.md from nbs/index.ipynb, offline (nbdev-readme needs Quarto; this does not).

Markdown cells are copied; code cells become ```python blocks followed by their text outputs; cells
marked `#| hide` are left out; links to notebooks become links to the docs site.

    python tools/make_readme.py          # write README.md
    python tools/make_readme.py --check  # exit 1 if README.md is not what index.ipynb generates
"""
import argparse, json, re, sys, tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = ("<!-- Generated from nbs/index.ipynb by `make readme` (tools/make_readme.py): edit the notebook, not this "
          "file. -->\n\n")
_re_directive = re.compile(r'^\s*#\|\s*(\S+)')
_re_nblink = re.compile(r'\]\((?!https?://)([^)\s]+?)\.ipynb(#[^)]*)?\)')


def _src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']


def _directives(src):
    return {m.group(1) for l in src.splitlines() if (m := _re_directive.match(l))}


def _doc_link(doc_url):
    def _f(m):
        p = Path(m.group(1))
        name = re.sub(r'^\d+[a-zA-Z0-9]*_', '', p.name)     # nbdev drops the numeric prefix from page names
        page = (p.parent / name).as_posix().lstrip('./')
        return f"]({doc_url}{page}.html{m.group(2) or ''})"
    return _f


def _outputs(cell):
    out = []
    for o in cell.get('outputs', []):
        if o['output_type'] == 'stream' and o.get('name') == 'stdout': txt = ''.join(o['text'])
        elif o['output_type'] in ('execute_result', 'display_data'):
            d = o.get('data', {})
            if 'text/markdown' in d:
                out.append(''.join(d['text/markdown']).strip() + '\n')
                continue
            if 'text/plain' not in d or 'image/png' in d: continue
            txt = ''.join(d['text/plain'])
        else: continue
        if txt.strip(): out.append('```\n' + txt.rstrip('\n') + '\n```\n')
    return out


def render(nb_path=ROOT / 'nbs' / 'index.ipynb', pyproject=ROOT / 'pyproject.toml') -> str:
    cfg = tomllib.loads(Path(pyproject).read_text())
    doc_url = cfg['project']['urls']['Documentation'].rstrip('/') + '/'
    nb = json.loads(Path(nb_path).read_text())
    parts = []
    for cell in nb['cells']:
        src = _src(cell)
        dirs = _directives(src)
        if dirs & {'hide', 'export', 'exporti', 'exports', 'default_exp'}: continue
        if cell['cell_type'] == 'markdown':
            parts.append(_re_nblink.sub(_doc_link(doc_url), src).strip() + '\n')
        elif cell['cell_type'] == 'code':
            code = '\n'.join(l for l in src.splitlines() if not _re_directive.match(l)).strip()
            if code: parts.append('```python\n' + code + '\n```\n')
            parts.extend(_outputs(cell))
    return HEADER + '\n'.join(parts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true', help='fail if README.md is out of date')
    ap.add_argument('--out', default=str(ROOT / 'README.md'))
    a = ap.parse_args(argv)
    text, out = render(), Path(a.out)
    if a.check:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is out of date with nbs/index.ipynb: run `make readme` and commit it.", file=sys.stderr)
            return 1
        return 0
    tmp = out.with_name(f'.{out.name}.tmp')
    tmp.write_text(text)
    tmp.replace(out)
    return 0


if __name__ == '__main__': sys.exit(main())
