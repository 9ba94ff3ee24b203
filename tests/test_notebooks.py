"""Execute every notebook under nbs/ (one test each) and the Colab quickstart, as nbdev-test would.

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


def test_colab_quickstart_runs_locally(tmp_path):
    "The Colab notebook runs outside Colab: Colab-only cells are skipped, outputs land in persist_dir()."
    execute(ROOT / 'colab' / '00_quickstart.ipynb', env={'RESTORE_NB_HOME': str(tmp_path)})
    out = tmp_path / 'quickstart'
    for f in ('report.md', 'metrics.json', 'grid.png', 'kernels.png', 'run/model.safetensors'):
        assert (out / f).exists(), f


def test_colab_train_notebook_disconnects_and_resumes_locally(tmp_path):
    "colab/01_train_deblur: checkpoints under persist_dir(), a simulated disconnect, an exact resume, evaluation."
    import json
    execute(ROOT / 'colab' / '01_train_deblur.ipynb', env={'RESTORE_NB_HOME': str(tmp_path)})
    runs = list((tmp_path / 'runs').glob('v1.*_unrolled-colab'))
    assert len(runs) == 1
    rec = json.loads((runs[0] / 'run.json').read_text())
    assert rec['status'] == 'finished' and rec['epochs'] == 4 and (runs[0] / 'model.safetensors').exists()


def test_colab_imgae_dx_notebook_runs_locally(tmp_path):
    "colab/02_imgae_dx: without Kaggle credentials it trains both models on an NIH-layout stand-in and evaluates them."
    import json
    execute(ROOT / 'colab' / '02_imgae_dx.ipynb', env={'RESTORE_NB_HOME': str(tmp_path),
                                                       'KAGGLE_CONFIG_DIR': str(tmp_path / 'nokaggle'),
                                                       'KAGGLE_API_TOKEN': '', 'KAGGLE_USERNAME': '', 'KAGGLE_KEY': ''})
    runs = sorted((tmp_path / 'runs').glob('v2.*_imgae_*'))
    assert [r.name.split('_', 1)[1] for r in runs] == ['imgae_unet', 'imgae_ra'] or len(runs) == 2
    for r in runs: assert json.loads((r / 'run.json').read_text())['status'] == 'finished'
