"""The Colab notebooks in a simulated Colab (tests/colab_sim.py): each runs top to bottom in a fresh kernel, twice
in a row, and the training notebooks survive a real SIGKILL of the kernel mid-training: a new kernel running the
notebook from the top resumes the same run and ends with the epochs and metrics of an uninterrupted run."""
import json
import pytest
from conftest import ROOT
from colab_sim import KernelKilled, colab_env, first_checkpoint, run_notebook

COLAB = ROOT / 'colab'


def _runs(drive):
    return sorted((drive / 'MyDrive' / 'restore_nb' / 'runs').glob('v*'))


def _record(run):
    return json.loads((run / 'run.json').read_text())


def _photos(folder, names, size):
    from restore_nb.core import sample_images, save_image
    folder.mkdir(parents=True)
    for n, x in sample_images(names, size=size).items(): save_image(x, folder / f'{n}.png')
    return folder


def test_quickstart_runs_twice_in_a_row(tmp_path):
    "colab/00_quickstart: installs nothing (already installed), mounts Drive, and a re-run replaces the report."
    drive = tmp_path / 'drive'
    env = colab_env(tmp_path, drive)
    first = run_notebook(COLAB / '00_quickstart.ipynb', env, tmp_path)
    assert first[0].startswith('Running in Colab') and 'Mounted at' in first[2]
    report = drive / 'MyDrive' / 'restore_nb' / 'quickstart'
    stamp = (report / 'run' / 'run.json').stat().st_mtime_ns
    second = run_notebook(COLAB / '00_quickstart.ipynb', env, tmp_path)
    assert 'PSNR' in second[3]
    for f in ('report.md', 'metrics.json', 'grid.png', 'kernels.png', 'run/model.safetensors'):
        assert (report / f).exists(), f
    assert (report / 'run' / 'run.json').stat().st_mtime_ns != stamp and not (report / '.run-new').exists()


def _kill_and_resume(nb, tmp_path, extra, n_runs):
    "An uninterrupted Drive (twice in a row) and a Drive whose runtime is killed mid-training, then run again."
    a, b = tmp_path / 'a', tmp_path / 'b'
    env_a, env_b = ({**colab_env(t, t / 'drive'), **extra} for t in (a, b))
    run_notebook(nb, env_a, a)
    again = run_notebook(nb, env_a, a)                  # a finished run is reused, not trained again
    ref = _runs(a / 'drive')
    assert len(ref) == n_runs and 'finished; using it' in ''.join(again)
    with pytest.raises(KernelKilled):
        run_notebook(nb, env_b, b, kill_when=first_checkpoint(b / 'drive' / 'MyDrive' / 'restore_nb' / 'runs'))
    cut = _runs(b / 'drive')
    assert any(_record(r)['status'] == 'running' for r in cut)      # SIGKILL: nothing could write 'interrupted'
    outs = run_notebook(nb, env_b, b)                                  # a new runtime: Run all
    assert 'resuming it' in ''.join(outs)
    got = _runs(b / 'drive')
    assert [r.name for r in got] == [r.name for r in ref]               # the same runs, none started twice
    for r, g in zip(ref, got):
        want, have = _record(r), _record(g)
        assert (have['status'], have['epochs']) == ('finished', want['epochs'])
        assert have['metrics'] == want['metrics'], (r.name, have['metrics'], want['metrics'])
    return outs


def test_train_deblur_resumes_after_a_kill(tmp_path):
    "colab/01_train_deblur with a Drive folder of photographs: kill, Run all again, same result as no kill."
    names = ('coffee', 'camera', 'astronaut', 'chelsea', 'rocket', 'brick', 'immunohistochemistry', 'coins')
    extra = dict(RESTORE_NB_TRAIN_DATA=str(_photos(tmp_path / 'photos', names, 96)),
                 RESTORE_NB_TEST_DATA=str(_photos(tmp_path / 'test', ('moon', 'page', 'horse'), 64)))
    outs = _kill_and_resume(COLAB / '01_train_deblur.ipynb', tmp_path, extra, 1)
    assert 'unrolled RL:' in outs[-1] and 'on 3 test images' in outs[-1]


@pytest.mark.slow   # 70 s; the deblur notebook's kill-and-resume test covers the same resume path by default
def test_imgae_dx_resumes_after_a_kill(tmp_path):
    "colab/02_imgae_dx without Kaggle secrets: the stand-in data, two runs, a kill during the first, Run all again."
    outs = _kill_and_resume(COLAB / '02_imgae_dx.ipynb', tmp_path, {}, 2)
    assert 'Kaggle credentials not found' in outs[2] and 'auroc' in outs[5].lower()


def test_imgae_dx_reads_the_kaggle_secret(tmp_path):
    "With the token set as a Colab secret (userdata.get, no userdata.list), the notebook streams from Kaggle."
    env = colab_env(tmp_path, tmp_path / 'drive', secrets={'KAGGLE_API_TOKEN': 'secret-token'})
    from colab_sim import _execute
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name='python3', env=env, cwd=str(tmp_path))
    try:
        out = _execute(kc, 'import google.colab, restore_nb.data.streaming as s\nprint(s.kaggle_credentials())', 120,
                       None, None)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert "'Authorization': 'Bearer secret-token'" in out
