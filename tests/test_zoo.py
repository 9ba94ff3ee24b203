"""The pretrained model zoo that ships in the package: cards, hashes, and each model restoring offline."""
import json
import pytest
import torch
from conftest import BIN, run

from restore_nb.core import sample_images, save_image
from restore_nb.infer import check_zoo, pretrained, restore, zoo_cards
from restore_nb.metrics import psnr
from restore_nb.physics import Blur, Downsample, GaussianNoise, Mosaic, motion_kernel
from restore_nb.tasks import TASKS

EXE = BIN / 'restore-nb'
EXPECTED = {'denoise-rgb', 'denoise-gray', 'sr-x2', 'sr-x4', 'demosaic-bayer', 'demosaic-xtrans', 'deblur-unrolled',
            'deblur-blind'}


def test_every_card_matches_its_weights_and_each_task_names_its_models():
    cards = zoo_cards()
    assert EXPECTED <= set(cards)
    assert set(check_zoo().values()) <= {'ok', 'remote'} and all(v == 'ok' for k, v in check_zoo().items()
                                                                 if k in EXPECTED)
    for name, c in cards.items():
        assert {'name', 'task', 'architecture', 'parameters', 'training', 'weights', 'figures'} <= set(c), name
        assert name in TASKS[c['task']].zoo
        assert c['training']['data'] and c['training']['licence'] and c['training']['command'].startswith('restore-nb')


def _clean(mode='rgb', size=96):
    return sample_images('astronaut', size=size, mode=mode)['astronaut'][None]


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_each_zoo_model_restores_a_small_image_above_its_input(name):
    task = zoo_cards()[name]['task']
    model = pretrained(name)
    g = torch.Generator().manual_seed(0)
    if task == 'denoise':
        x = _clean('gray' if name.endswith('gray') else 'rgb')
        A = None
        y = x + 25 / 255 * torch.randn(x.shape, generator=g)
        ref = y
    elif task == 'sr':
        s = model.config.scales[0]
        x = _clean(size=96)
        A = Downsample(s, 'bicubic')
        y = A(x)
        ref = torch.nn.functional.interpolate(y, scale_factor=s, mode='nearest')   # the input, pixels repeated
    elif task == 'deblur':
        x = _clean()
        A = Blur(motion_kernel(11, 30.0), noise=GaussianNoise(0.01))
        y = A.measure(x, seed=0)
        ref = y
    else:
        x = _clean(size=96)
        A = Mosaic('XTRANS' if name.endswith('xtrans') else 'RGGB')
        y = A(x)
        ref = torch.nn.functional.interpolate(y.expand(-1, 3, -1, -1), scale_factor=1)  # the raw mosaic as an image
    with torch.no_grad(): out = restore(model, y, A).clamp(0, 1)
    assert out.shape == x.shape
    assert psnr(out, x) > psnr(ref.clamp(0, 1), x), name


def test_restore_without_a_checkpoint_uses_the_zoo_and_verifies(tmp_path, capsys):
    "From a fresh install, offline: `restore-nb restore noisy.png --task denoise --sigma 25 --out o/`, then verify."
    x = _clean(size=64)[0]
    noisy = (x + 25 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    save_image(noisy, tmp_path / 'noisy.png')
    r = run([EXE, 'restore', tmp_path / 'noisy.png', '--task', 'denoise', '--sigma', '25', '--out', tmp_path / 'o'])
    assert r.returncode == 0, r.stderr
    out = tmp_path / 'o' / 'noisy_restored.png'
    m = json.loads((tmp_path / 'o' / 'noisy_restored.png.json').read_text())
    assert m['weights']['abspath'].endswith('zoo/denoise-rgb/model.safetensors')
    r = run([EXE, 'verify', out])
    assert r.returncode == 0 and 'OK' in r.stdout, r.stderr
    from restore_nb.cli import main                         # the listing in-process: one interpreter start-up less
    assert main(['zoo']) == 0
    listing = capsys.readouterr().out
    assert all(n in listing for n in EXPECTED)
    assert main(['zoo', 'denoise-rgb']) == 0 and 'SHA-256' in capsys.readouterr().out
