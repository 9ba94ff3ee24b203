#!/usr/bin/env python
"""The release checks: build the sdist and wheel, check them, install the wheel in a clean venv and smoke-test it.

The GitHub release workflow (.github/workflows/release.yml) runs these steps on a version tag and then publishes
to PyPI by trusted publishing; CI (.ci/run, `make release-check`) runs every step but the upload.

    python tools/release.py check-tag v0.4.0           # the tag names the package's version
    python tools/release.py build                      # dist/restore_nb-VERSION.tar.gz and -py3-none-any.whl
    python tools/release.py check                      # twine check --strict, and what the wheel must contain
    python tools/release.py smoke [--deps install|borrow]

`smoke` makes a new venv outside the repository, installs the wheel into it and, from an empty folder, imports
the package, runs `restore-nb --version` and restores a noisy image with the packaged zoo model, then verifies
the restored file against its manifest. `--deps install` (the release workflow) installs the wheel with its
dependencies from the package index; `--deps borrow` (CI, offline-friendly and minutes faster) installs the wheel
alone and lets the venv see the dependencies of the running interpreter, then `pip check`s them.
"""
import argparse, os, re, shutil, subprocess, sys, sysconfig, tempfile, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / 'dist'


def version() -> str:
    m = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", (ROOT / 'restore_nb' / '__init__.py').read_text(), re.M)
    return m[1]


def sh(*cmd, cwd=None, env=None):
    print('$', ' '.join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, check=True)


def check_tag(tag: str):
    if tag.removeprefix('v') != version():
        raise SystemExit(f"tag {tag} does not match restore_nb/__init__.py __version__ = {version()}; bump the version "
                         "in nbs/index.ipynb's settings (see CHANGELOG.md, 'How to release') and tag again")
    print(f"tag {tag} = version {version()}")


def build():
    shutil.rmtree(DIST, ignore_errors=True)
    sh(sys.executable, '-m', 'build', '--sdist', '--wheel', '--outdir', DIST, ROOT)


def wheel() -> Path:
    found = sorted(DIST.glob(f'restore_nb-{version()}-*.whl'))
    if not found: raise SystemExit(f"no wheel of version {version()} in {DIST}; run `python tools/release.py build`")
    return found[-1]


def check():
    sh(sys.executable, '-m', 'twine', 'check', '--strict', *sorted(DIST.glob('*')))
    names = set(zipfile.ZipFile(wheel()).namelist())
    need = ['restore_nb/__init__.py', 'restore_nb/cli.py', 'restore_nb/_modidx.py', 'restore_nb/physics/ops.py',
            'restore_nb/tasks/deblur.py', 'restore_nb/infer/zoo.py', 'restore_nb/data/datasets.py',
            'restore_nb/zoo/denoise-rgb/model.safetensors', 'restore_nb/zoo/denoise-rgb/card.json',
            'restore_nb/serve/__init__.py', 'restore_nb/serve/static/index.html',
            'restore_nb/serve/static/dashboard.html']
    missing = [n for n in need if n not in names]
    if missing: raise SystemExit(f"{wheel().name} lacks {missing}")
    if not any(n.endswith('entry_points.txt') for n in names): raise SystemExit(f"{wheel().name}: no entry points")
    print(f"{wheel().name}: {len(names)} files, the subpackages, the zoo and the restore-nb command are in")


SMOKE = '''
import restore_nb, sys
from pathlib import Path
assert Path(restore_nb.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), restore_nb.__file__
import torch
from restore_nb.core import sample_images, save_image
torch.manual_seed(0)
x = sample_images(('coffee',), size=96)['coffee']
save_image((x + 25 / 255 * torch.randn_like(x)).clamp(0, 1), 'noisy.png')
print('imported', restore_nb.__version__, 'from the clean venv')
'''


SERVE = '''
import base64, json, socket, subprocess, sys, time, urllib.request
from pathlib import Path
with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
url = f'http://127.0.0.1:{port}'
t0 = time.monotonic()
exe = str(Path(sys.executable).parent/'restore-nb')
p = subprocess.Popen([exe, 'serve', '--port', str(port), '--root', 'serve-root'])
try:
    while True:
        try:
            if urllib.request.urlopen(url + '/healthz', timeout=1).status == 200: break
        except OSError:
            if time.monotonic() - t0 > 120 or p.poll() is not None: raise SystemExit('restore-nb serve did not start')
            time.sleep(0.2)
    up = time.monotonic() - t0
    body = json.dumps(dict(task='denoise', image=base64.b64encode(open('noisy.png', 'rb').read()).decode())).encode()
    req = urllib.request.Request(url + '/v1/restore', body, {'Content-Type': 'application/json'})
    r = json.loads(urllib.request.urlopen(req, timeout=300).read())
    assert r['model'] == 'denoise-rgb' and r['image'], r
    assert b'id="run"' in urllib.request.urlopen(url + '/', timeout=10).read()
    print(f'restore-nb serve: up in {up:.1f} s, restored an upload with {r["model"]}, served the web page')
finally:
    p.terminate()
    p.wait(30)
'''


def smoke(deps: str):
    whl = wheel()
    with tempfile.TemporaryDirectory(prefix='restore_nb-smoke-') as tmp:
        tmp = Path(tmp)
        venv, work = tmp / 'venv', tmp / 'work'
        work.mkdir()
        sh(sys.executable, '-m', 'venv', venv)
        py = venv / 'bin' / 'python'
        if deps == 'install': sh(py, '-m', 'pip', 'install', '-q', whl)
        else:
            sh(py, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', whl)
            sh(py, '-m', 'pip', 'uninstall', '-q', '-y', 'setuptools')   # the venv's old one would shadow the borrowed
            site = Path(subprocess.check_output([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                                                text=True).strip())
            # the running interpreter's packages, after the venv's own: the wheel's restore_nb comes first
            (site / '_borrowed_deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
        env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'RESTORE_NB_HOME')}
        env.update(RESTORE_NB_HOME=str(tmp / 'home'), WANDB_MODE='disabled')
        sh(py, '-c', SMOKE, cwd=work, env=env)
        exe = venv / 'bin' / 'restore-nb'
        sh(exe, '--version', cwd=work, env=env)
        sh(exe, 'restore', 'noisy.png', '--task', 'denoise', '--sigma', '25', '--out', 'restored', '--device', 'cpu',
           cwd=work, env=env)
        sh(exe, 'verify', 'restored/noisy_restored.png', cwd=work, env=env)
        sh(py, '-c', SERVE, cwd=work, env=env)
        if deps == 'borrow': sh(py, '-m', 'pip', 'check', env=env)
    print(f"{whl.name}: installs, imports, restores and verifies in a clean venv ({deps} dependencies)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    sub.add_parser('check-tag').add_argument('tag')
    sub.add_parser('build')
    sub.add_parser('check')
    sub.add_parser('smoke').add_argument('--deps', choices=('install', 'borrow'), default='borrow')
    sub.add_parser('all').add_argument('--deps', choices=('install', 'borrow'), default='borrow')
    a = ap.parse_args(argv)
    if a.cmd == 'check-tag': check_tag(a.tag)
    elif a.cmd == 'build': build()
    elif a.cmd == 'check': check()
    elif a.cmd == 'smoke': smoke(a.deps)
    else:
        build()
        check()
        smoke(a.deps)


if __name__ == '__main__':
    main()
