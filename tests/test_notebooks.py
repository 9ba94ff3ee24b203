"""Execute every notebook under nbs/ (one test each), as nbdev-test would (the Colab notebooks: tests/test_colab.py).

Cells flagged `#| notest` are skipped; cells flagged `#| slow` run only under `make test-slow`.
Each notebook runs in its own process so global state (seeds, torch threads, matplotlib) cannot leak.
"""
import sys
from pathlib import Path
import pytest
from conftest import ROOT, SLOW, run

NBS = ROOT / 'nbs'


def notebooks(folder: Path):
    return sorted(p for p in folder.rglob('*.ipynb')
                  if not any(part.startswith(('.', '_')) for part in p.relative_to(folder).parts))


RUNNER = """
import sys
from nbdev.test import test_nb
ok, secs = test_nb(sys.argv[1], skip_flags=sys.argv[2].split(','), cell_timeout=900)
print(f'{sys.argv[1]}: {secs:.1f} s')
sys.exit(0 if ok else 1)
"""


def execute(nb: Path, env=None):
    flags = 'notest' if SLOW else 'notest,slow'
    r = run([sys.executable, '-c', RUNNER, nb.name, flags], cwd=nb.parent, env=env)
    assert r.returncode == 0, f"notebook {nb.relative_to(ROOT)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-8000:]}"
    return r


@pytest.mark.parametrize('nb', notebooks(NBS), ids=lambda p: str(p.relative_to(NBS)))
def test_notebook_executes(nb):
    execute(nb)
