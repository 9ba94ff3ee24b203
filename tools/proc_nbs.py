#!/usr/bin/env python
"""Run `nbdev-proc-nbs` (the docs pre-processing step) and check that every notebook was processed.

nbdev-proc-nbs insists on finding a `quarto` executable and tries to download one if it is missing,
which fails offline. Processing itself never calls Quarto, so where Quarto is absent we put a stand-in
`quarto` on PATH that refuses to render (exit 1, with a message). Rendering the site needs the real
Quarto; the GitHub deploy workflow installs it.

    python tools/proc_nbs.py [--root DIR]
"""
import argparse, os, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUB = ('#!/bin/sh\necho "quarto is not installed here: restore_nb checked processing only (nbdev-proc-nbs); render '
        'with real Quarto" >&2\nexit 1\n')


def notebooks(nbs: Path):
    return sorted(
        p for p in nbs.rglob('*.ipynb') if not any(part.startswith(('.', '_')) for part in p.relative_to(nbs).parts)
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--root', default=str(ROOT), help='project root (holds pyproject.toml and nbs/)')
    root = Path(ap.parse_args(argv).root).resolve()
    exe = Path(sys.executable).parent / 'nbdev-proc-nbs'
    cmd = [str(exe) if exe.exists() else 'nbdev-proc-nbs']
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as stubdir:
        if not shutil.which('quarto'):
            stub = Path(stubdir) / 'quarto'
            stub.write_text(STUB)
            stub.chmod(0o755)
            env['PATH'] = f"{stubdir}{os.pathsep}{env.get('PATH', '')}"
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr, sep='\n', file=sys.stderr)
        print(f"nbdev-proc-nbs failed (exit {r.returncode})", file=sys.stderr)
        return 1
    nbs, proc = root / 'nbs', root / '_proc'
    missing = [str(p.relative_to(nbs)) for p in notebooks(nbs) if not (proc / p.relative_to(nbs)).exists()]
    if missing:
        print(f"nbdev-proc-nbs did not produce: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"nbdev-proc-nbs: processed {len(notebooks(nbs))} notebooks into {proc}")
    return 0


if __name__ == '__main__': sys.exit(main())
