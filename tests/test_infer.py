"""restore_nb.infer: tiled restoration agrees with whole-image restoration; ONNX matches; manifests catch changes."""
import json
import numpy as np
import pytest
import torch
from restore_nb.core import set_seed, save_image, save_model
from restore_nb.physics import Blur, motion_kernel
from restore_nb.models import UNet, UnrolledRL
from restore_nb.infer import restore, export_onnx, restore_files, verify


def _perturbed(m, s=0.01):
    with torch.no_grad():
        for p in m.parameters(): p.add_(s * torch.randn_like(p))
    return m.eval()


@pytest.mark.parametrize('shape', [(3, 200, 152), (1, 3, 97, 260)])
def test_tiled_equals_untiled_for_a_cnn(shape):
    set_seed(0)
    m = _perturbed(UNet(width=8))
    x = torch.rand(*shape)
    whole, tiled = restore(m, x), restore(m, x, tile=128, overlap=96)
    assert tiled.shape == x.shape and (tiled - whole).abs().max() <= 1e-4


def test_tiled_unrolled_rl_in_float64_agrees_with_whole():
    set_seed(0)
    m = _perturbed(UnrolledRL(layers=2, prior_width=8)).double()
    k = motion_kernel(9, 20.0).double()
    y = Blur(k)(torch.rand(1, 3, 160, 160, dtype=torch.float64))
    assert (restore(m, y, Blur(k), tile=112, overlap=80) - restore(m, y, Blur(k))).abs().max() <= 1e-4


def test_restore_checks_its_arguments():
    m = UNet(width=4)
    with pytest.raises(ValueError, match='image'): restore(m, torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match='overlap'): restore(m, torch.rand(3, 64, 64), tile=32, overlap=32)
    with pytest.raises(ValueError, match='tile: expected a tile side'): restore(m, torch.rand(3, 64, 64), tile=-5)
    with pytest.raises(ValueError, match='needs the blur operator'):
        restore(UnrolledRL(layers=1), torch.rand(3, 32, 32))


@pytest.mark.slow   # 37 s; the tiling benchmark checks the exports too
def test_onnx_export_matches_pytorch(tmp_path):
    pytest.importorskip('onnxruntime')
    set_seed(0)
    r = export_onnx(_perturbed(UNet(width=8)), tmp_path / 'm.onnx', size=32, check_size=48)
    assert r['max_abs_diff'] <= 1e-4 and (tmp_path / 'm.onnx').exists()
    r = export_onnx(_perturbed(UnrolledRL(layers=1, prior_width=4)), tmp_path / 'u.onnx', size=32, check_size=40,
                    kernel_size=9)
    assert r['max_abs_diff'] <= 1e-4 and r['inputs'] == ['image', 'kernel']


def test_restore_files_manifests_and_verify(tmp_path):
    set_seed(0)
    save_model(_perturbed(UNet(width=4)), tmp_path / 'ck')
    save_image(torch.rand(1, 40, 40), tmp_path / 'grey.png')            # a grey input into an RGB model stays grey
    save_image(torch.rand(3, 40, 40), tmp_path / 'rgb.png')
    recs = restore_files(tmp_path / 'ck', [tmp_path / 'grey.png', tmp_path / 'rgb.png'], tmp_path / 'out', device='cpu')
    from restore_nb.core import load_image
    assert load_image(recs[0]['output']).shape == (1, 40, 40)
    m = json.loads((tmp_path / 'out' / 'grey_restored.png.json').read_text())
    assert m['model']['cls'] == 'restore_nb.models.unrolled.UNet' and m['degradation']['kind'] == 'unspecified'
    assert all(verify(r['output'])['ok'] for r in recs)
    # moving the whole tree keeps the relative paths valid
    import shutil
    shutil.move(tmp_path / 'out', tmp_path / 'moved_out')
    shutil.move(tmp_path / 'grey.png', tmp_path / 'moved_grey.png')
    r = verify(tmp_path / 'moved_out' / 'grey_restored.png')
    assert r['checks'] == {'credentials': 'untrusted', 'output': 'ok', 'manifest': 'ok', 'input': 'missing',
                           'weights': 'ok'} and not r['ok']
    with pytest.raises(FileNotFoundError, match='input image not found'):
        restore_files(tmp_path / 'ck', [tmp_path / 'nope.png'], tmp_path / 'o')
    with pytest.raises(ValueError, match='not a restore_nb manifest'):
        (tmp_path / 'x.png.json').write_text('{"format": "other"}')
        save_image(torch.rand(1, 8, 8), tmp_path / 'x.png')
        verify(tmp_path / 'x.png')


def test_blind_model_manifest_records_the_kernel_estimate(tmp_path):
    set_seed(0)
    save_model(UnrolledRL(blind=True, layers=1, kernel_size=9, prior_width=4), tmp_path / 'ck')
    save_image(torch.rand(3, 48, 48), tmp_path / 'a.png')
    rec = restore_files(tmp_path / 'ck', [tmp_path / 'a.png'], tmp_path / 'out', tile=32, overlap=16, device='cpu')[0]
    k = np.array(json.loads(open(rec['manifest']).read())['degradation']['kernel'])
    assert k.shape == (9, 9) and abs(k.sum() - 1) < 1e-4


@pytest.mark.slow
def test_onnx_export_of_the_blind_unrolled_network(tmp_path):
    pytest.importorskip('onnxruntime')
    r = export_onnx(_perturbed(UnrolledRL(blind=True, layers=1, kernel_size=9, prior_width=4)), tmp_path / 'b.onnx',
                    size=32, check_size=40)
    assert r['max_abs_diff'] <= 1e-4
