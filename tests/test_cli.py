"""The installed `restore-nb` command, run as a user runs it."""
import json
import pytest
import restore_nb
from conftest import BIN, run

EXE = BIN / 'restore-nb'


def test_version_and_help(capsys):
    r = run([EXE, '--version'])                                 # the installed script
    assert r.returncode == 0 and r.stdout.strip() == f'restore_nb {restore_nb.__version__}'
    from restore_nb.cli import main                             # the same entry point in-process
    with pytest.raises(SystemExit) as e: main(['--help'])
    assert e.value.code == 0 and 'demo' in capsys.readouterr().out
    assert main([]) == 2 and 'COMMAND' in capsys.readouterr().out


@pytest.mark.slow   # 1 min; colab/00_quickstart runs the demo
def test_demo_trains_and_beats_the_blurred_input(tmp_path):
    out = tmp_path / 'report'
    r = run([EXE, 'demo', '--out', out, '--minutes', '0.25', '--device', 'cpu'], timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / 'metrics.json').read_text())
    assert {'task', 'protocol', 'metrics', 'per_image'} <= set(res) and res['task'] == 'deblur'
    m = res['metrics']
    assert m['rl']['psnr'] > m['blurred']['psnr'] + 1 and m['unrolled']['psnr'] > m['blurred']['psnr'] + 1
    assert len(res['per_image']) == 4 * len(res['protocol']['test_images'])
    assert (out / 'report.md').read_text().startswith('# restore_nb demo')
    for f in ('grid.png', 'kernels.png', 'run/model.safetensors', 'run/run.json', 'run/log.csv'):
        assert (out / f).exists(), f


def test_bad_arguments_are_one_clear_line(tmp_path, capsys):
    from restore_nb.cli import main
    def bad(*args, expect, subprocess=False):
        if subprocess:                      # the installed script: argparse errors and our own errors
            r = run([EXE, *args])
            rc, err = r.returncode, r.stderr
        else:                               # the same entry point in-process (one interpreter start-up instead of ten)
            capsys.readouterr()
            try: rc = main([str(a) for a in args])
            except SystemExit as e: rc = e.code             # argparse's own errors
            err = capsys.readouterr().err
        assert rc == 2, (args, err)
        assert expect in err and 'Traceback' not in err, (args, err)
    bad('demo', '--size', 'big', expect='invalid int value', subprocess=True)
    bad('train', 'inpaint', expect="invalid choice: 'inpaint'")
    bad('demo', '--out', tmp_path, '--size', '8', expect='--size: expected a crop side of at least 32')
    bad('eval', 'deblur', '--ckpt', tmp_path / 'missing', expect='checkpoint not found')
    (tmp_path / 'empty').mkdir()
    bad('train', 'deblur', '--data', tmp_path / 'empty', '--out', tmp_path / 'r', expect='no images')
    (tmp_path / 'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
    from restore_nb.core import save_model
    from restore_nb.models import UNet
    save_model(UNet(width=4), tmp_path / 'ck')
    bad('restore', tmp_path / 'bad.png', '--ckpt', tmp_path / 'ck', '--out', tmp_path / 'o',
        expect='serves 3 tasks; give --task')
    bad('restore', tmp_path / 'bad.png', '--ckpt', tmp_path / 'ck', '--task', 'deblur', '--out', tmp_path / 'o',
        expect='Cannot read image')
    bad('restore', tmp_path / 'bad.png', '--ckpt', tmp_path / 'nothing', expect='checkpoint not found')
    bad('resume', tmp_path / 'empty', expect='run.json not found')
    bad('data', 'Set13', '--root', tmp_path, expect="unknown set 'Set13'")
    (tmp_path / 'data' / 'Set12').mkdir(parents=True)
    bad('data', 'Set12', '--root', tmp_path / 'data', expect='holds 0 images, expected 12')
    import torch
    from restore_nb.core import save_image
    save_image(torch.rand(3, 8, 8), tmp_path / 'plain.png')
    bad('verify', tmp_path / 'plain.png', expect='carries no Content Credentials and has no manifest')
    capsys.readouterr()
    assert main(['verify', str(tmp_path / 'bad.png')]) == 1 and 'credentials: unreadable' in capsys.readouterr().err
    bad('audit', expect='give a FOLDER')
    bad('audit', '--log', tmp_path / 'none.jsonl', expect='--log: ')
    bad('restore', tmp_path / 'plain.png', '--task', 'denoise', '--sign-cert', tmp_path / 'plain.png',
        expect='give both')
    bad('train', 'deblur', '--minutes', '-1', expect='--minutes: expected a number > 0')
    bad('train', 'deblur', '--bs', '0', expect='--bs: expected a batch size of at least 1')
    bad('restore', tmp_path / 'bad.png', '--ckpt', tmp_path / 'ck', '--task', 'deblur', '--tile', '-5',
        expect='--tile: expected a tile side')
    with pytest.raises(SystemExit): main(['bench', 'sr'])                      # argparse: invalid choice


@pytest.mark.slow   # 80 s; the default suite covers the path in pieces: 09_tasks (train/eval/restore a task),
#                    test_zoo (restore + verify from the command line), test_colab (resume), release smoke
def test_train_eval_restore_verify_end_to_end(tmp_path):
    """The issue's acceptance path: train, eval, restore, verify, and a resumed run that continues."""
    import numpy as np, torch
    from restore_nb.core import save_image
    from restore_nb.physics import Blur, motion_kernel
    run_dir = tmp_path / 'runs' / 'v0.1_unrolled'
    r = run([EXE, 'train', 'deblur', '--data', 'builtin', '--epochs', '1', '--n_train', '32', '--size', '40',
             '--layers', '2',
             '--out', run_dir], timeout=600)
    assert r.returncode == 0, r.stderr
    rec = json.loads((run_dir / 'run.json').read_text())
    assert rec['status'] == 'finished' and rec['epochs'] >= 1 and (run_dir / 'checkpoints' / 'best.json').exists()
    meta = json.loads((run_dir / 'config.json').read_text())
    assert (
        meta['class'] == 'restore_nb.models.unrolled.UnrolledRL'
        and meta['config']['layers'] == 2
        and meta['task'] == 'deblur'
    )
    for i in range(2): save_image(torch.rand(1, 48, 48), tmp_path / 'test' / f'{i}.png')
    np.save(tmp_path / 'k.npy',
            np.stack([motion_kernel(7, 0.0, size=9).numpy(), motion_kernel(7, 90.0, size=9).numpy()]))
    out = tmp_path / 'eval.json'
    r = run([EXE, 'eval', 'deblur', '--ckpt', run_dir, '--data', tmp_path / 'test', '--kernels', tmp_path / 'k.npy',
             '--sigma', '2.55', '--json', out])
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert len(res['per_image']) == 4 and res['protocol']['sigma'] == 2.55 and len(res['protocol']['degradations']) == 2
    assert (run_dir / 'eval.json').exists() and 'all kernels' in r.stdout
    from restore_nb.train import runs_table
    t = runs_table(tmp_path / 'runs')
    assert t.run.tolist() == ['v0.1_unrolled'] and t.test_psnr[0] == pytest.approx(
        res['metrics']['UnrolledRL']['all kernels']['psnr']
    )
    k = motion_kernel(7, 30.0, size=9)
    np.save(tmp_path / 'k1.npy', k.numpy())
    save_image(Blur(k)(torch.rand(1, 3, 150, 130)).clamp(0, 1), tmp_path / 'in' / 'photo.png')
    r = run([EXE, 'restore', tmp_path / 'in' / 'photo.png', '--ckpt', run_dir, '--kernel', tmp_path / 'k1.npy',
             '--out', tmp_path / 'out', '--tile', '96', '--overlap', '48'])
    assert r.returncode == 0, r.stderr
    restored = tmp_path / 'out' / 'photo_restored.png'
    assert run([EXE, 'verify', restored]).returncode == 0
    # kernel file is not part of the check, the input is
    np.save(tmp_path / 'k1.npy', np.pad(k.numpy(), 1))
    b = bytearray((tmp_path / 'in' / 'photo.png').read_bytes())
    b[-30] ^= 4
    (tmp_path / 'in' / 'photo.png').write_bytes(bytes(b))
    r = run([EXE, 'verify', restored])
    assert r.returncode == 1 and 'input' in r.stderr and 'changed' in r.stderr
    # resume a finished run: nothing left to do, the record stays finished
    r = run([EXE, 'train', 'deblur', '--out', run_dir, '--resume', '--size', '40', '--layers', '2'], timeout=600)
    assert r.returncode == 0 and 'already finished' in r.stdout, r.stderr
    assert json.loads((run_dir / 'run.json').read_text())['epochs'] == rec['epochs']
    r = run([EXE, 'train', 'deblur', '--out', run_dir, '--epochs', '1'])
    assert r.returncode == 2 and 'already holds a run' in r.stderr


@pytest.mark.slow
def test_bench_deblur_quick(tmp_path):
    out = tmp_path / 'b.json'
    r = run([EXE, 'bench', 'deblur', '--quick', '--json', out, '--out', tmp_path / 'runs'], timeout=1800)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert {'speed', 'metrics', 'training', 'kernel_error'} <= set(res) and out.with_suffix('.md').exists()


@pytest.mark.slow   # 36 s; 09b_tasks.demosaic trains, evaluates and restores through the same task (Bayer)
def test_train_and_eval_demosaic(tmp_path):
    """`restore-nb train demosaic`, then `eval demosaic --ckpt RUN --data DIR --cfa xtrans --sigma S --json OUT`."""
    from restore_nb.core import save_image
    from restore_nb.data import ImageSource
    data = tmp_path / 'test'
    data.mkdir()
    src = ImageSource('builtin')
    for i in (0, 2): save_image(src[i][:, :72, :72], data / f'{src.names[i]}.png')
    run_dir = tmp_path / 'runs' / 'dm'
    r = run([EXE, 'train', 'demosaic', '--cfa', 'xtrans', '--sigma', '5.1', '--epochs', '1', '--n_train', '32',
             '--size', '24', '--bs', '4',
             '--out', run_dir], timeout=600)
    assert r.returncode == 0, r.stderr
    assert 'restore-nb train demosaic' in r.stdout and (run_dir / 'run.json').exists()
    out = tmp_path / 'eval.json'
    r = run([EXE, 'eval', 'demosaic', '--ckpt', run_dir, '--data', data, '--cfa', 'xtrans', '--sigma', '2.55',
             '--json', out])
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert (
        res['protocol']['cfa'] == 'XTRANS'
        and res['protocol']['images'] == 2
        and list(res['metrics']['DemosaicNet']) == ['xtrans σ=2.55']
    )
    assert {'psnr', 'ssim', 'grid', 'seconds_per_mp'} <= set(
        res['metrics']['DemosaicNet']['xtrans σ=2.55']
    ) and 'sRGB' in res['protocol']['space']
    assert 'grid' in r.stdout
    r = run([EXE, 'eval', 'demosaic', '--ckpt', run_dir, '--data', data, '--cfa', 'quad'])
    assert r.returncode == 2 and "invalid choice: 'quad'" in r.stderr


@pytest.mark.slow   # 1.5 min; 09c_tasks.denoise trains and evaluates the task
def test_train_and_eval_denoise_gray(tmp_path):
    from restore_nb.cli import main
    from restore_nb.core import sample_images, save_image
    run_dir = tmp_path / 'swin'
    r = run([EXE, 'train', 'denoise', '--gray', '--epochs', '2', '--n_train', '256', '--size', '32', '--bs', '16',
             '--out', run_dir,
             '--device', 'cpu'], timeout=600)
    assert r.returncode == 0, r.stderr
    (tmp_path / 'test').mkdir()
    for name, im in list(sample_images(mode='gray').items())[:2]:
        save_image(im[:, :64, :80], tmp_path / 'test' / f'{name}.png')
    r = run([EXE, 'eval', 'denoise', '--ckpt', run_dir, '--data', tmp_path / 'test', '--sigmas', '25,50', '--json',
             tmp_path / 'e.json', '--device', 'cpu'],
            timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / 'e.json').read_text())
    m = res['metrics']
    assert set(m['SwinUNet']) == {'σ=25', 'σ=50'} and res['protocol']['images'] == 2
    assert m['SwinUNet']['σ=50']['psnr'] > m['noisy input']['σ=50']['psnr'] + 3  # 2 short epochs already denoise σ=50
    assert 'σ=50 psnr' in r.stdout and (run_dir / 'eval.json').exists()
    with pytest.raises(SystemExit):  # argparse: invalid value
        main(['eval', 'denoise', '--ckpt', str(run_dir), '--sigmas', 'high'])
