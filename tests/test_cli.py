"""The installed `restore-nb` command, run as a user runs it."""
import json
import pytest
import restore_nb
from conftest import BIN, run

EXE = BIN / 'restore-nb'


def test_version_and_help():
    r = run([EXE, '--version'])
    assert r.returncode == 0 and r.stdout.strip() == f'restore_nb {restore_nb.__version__}'
    r = run([EXE, '--help'])
    assert r.returncode == 0 and 'demo' in r.stdout
    r = run([EXE])
    assert r.returncode == 2 and 'COMMAND' in r.stdout


def test_demo_restores_better_than_degraded(tmp_path):
    out = tmp_path / 'report'
    r = run([EXE, 'demo', '--out', out, '--size', '64'])
    assert r.returncode == 0, r.stderr
    res = json.loads((out / 'results.json').read_text())
    assert set(res) == {'task', 'protocol', 'metrics', 'per_image'} and res['task'] == 'deblur'
    assert len(res['per_image']) == 6
    m = res['metrics']
    assert m['wiener']['psnr'] > m['degraded']['psnr'] + 0.5
    assert m['richardson_lucy']['psnr'] > m['degraded']['psnr'] + 0.5
    assert (out / 'report.md').read_text().startswith('# restore_nb demo')
    assert len(list((out / 'images').glob('*.png'))) == 6 * 4


def test_demo_bad_argument_is_one_clear_line(tmp_path):
    r = run([EXE, 'demo', '--out', tmp_path, '--size', '8'])
    assert r.returncode == 2
    assert 'size must be at least 32' in r.stderr and 'Traceback' not in r.stderr
    r = run([EXE, 'demo', '--size', 'big'])
    assert r.returncode == 2 and 'invalid int value' in r.stderr


def test_train_then_eval_deblur(tmp_path):
    import numpy as np, torch
    from restore_nb.core import save_image
    from restore_nb.physics import motion_kernel
    ckpt = tmp_path / 'run'
    r = run([EXE, 'train', 'deblur', '--out', ckpt, '--epochs', '1', '--size', '40', '--bs', '8', '--layers', '2'], timeout=600)
    assert r.returncode == 0, r.stderr
    meta = json.loads((ckpt / 'config.json').read_text())
    assert meta['class'] == 'restore_nb.deconv.UnrolledRL' and meta['config']['layers'] == 2 and len(meta['history']) == 1
    for i in range(2): save_image(torch.rand(1, 48, 48), tmp_path / 'test' / f'{i}.png')
    np.save(tmp_path / 'k.npy', np.stack([motion_kernel(7, 0.0, size=9).numpy(), motion_kernel(7, 90.0, size=9).numpy()]))
    out = tmp_path / 'eval.json'
    r = run([EXE, 'eval', 'deblur', '--ckpt', ckpt, '--data', tmp_path / 'test', '--kernels', tmp_path / 'k.npy', '--sigma', '0.01', '--json', out])
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert len(res['per_image']) == 4 and res['protocol']['sigma'] == 0.01 and res['protocol']['kernels'] == 2
    assert {'psnr', 'ssim'} <= set(res['metrics'])
    r = run([EXE, 'eval', 'deblur', '--ckpt', tmp_path / 'missing'])
    assert r.returncode == 2 and 'not found' in r.stderr and 'Traceback' not in r.stderr


@pytest.mark.slow
def test_bench_deblur_quick(tmp_path):
    out = tmp_path / 'b.json'
    r = run([EXE, 'bench', 'deblur', '--quick', '--json', out, '--out', tmp_path / 'runs'], timeout=1800)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert {'speed', 'quality', 'training', 'kernel_error'} <= set(res) and out.with_suffix('.md').exists()
