"""restore_nb.evaluate: the fixed evaluation protocol and the classical baselines."""
import json
import pytest
import torch
from restore_nb.core import save_image, save_model
from restore_nb.physics import Blur, motion_kernel, gaussian_kernel
from restore_nb.data import ImageSource
from restore_nb.deconv import UNet, UNetConfig
from restore_nb.evaluate import (evaluate_deblur, rl_method, wiener_method, blurred_method, skimage_rl_method,
                                 tune_classical, rl_speed)


@pytest.fixture
def grey_folder(tmp_path):
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        x = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 96, 96, generator=g), 3, 1, 1)[0]
        save_image(x, tmp_path / f'{i}.png')
    return tmp_path


KS = [motion_kernel(9, 40.0, size=11), gaussian_kernel(1.2, size=11)]


def test_protocol_is_reproducible_and_complete(grey_folder):
    a = evaluate_deblur(rl_method(10), grey_folder, KS, sigma=0.02, seed=3)
    b = evaluate_deblur(rl_method(10), grey_folder, KS, sigma=0.02, seed=3)
    assert a['per_image'] == b['per_image'] and len(a['per_image']) == 4
    assert set(a) == {'task', 'protocol', 'metrics', 'per_image'}
    assert json.loads(json.dumps(a)) == a                       # plain JSON
    c = evaluate_deblur(rl_method(10), grey_folder, KS, sigma=0.02, seed=4)
    assert c['per_image'] != a['per_image']                      # the seed is the noise


def test_methods_see_the_same_degraded_inputs(grey_folder):
    "Every method is given identical inputs: the blurred-input 'method' reproduces the degradation exactly."
    seen = []
    def spy(y, k): seen.append((y.clone(), k.clone())); return y
    evaluate_deblur(spy, grey_folder, KS, sigma=0.01, seed=0)
    evaluate_deblur(spy, grey_folder, KS, sigma=0.01, seed=0)
    for (y1, k1), (y2, k2) in zip(seen[:4], seen[4:]): assert torch.equal(y1, y2) and torch.equal(k1, k2)
    x0 = ImageSource(grey_folder, mode=None)[0][None]
    assert (seen[0][0] - Blur(KS[0])(x0)).std() == pytest.approx(0.01, rel=0.15)


def test_grey_images_run_through_colour_models(grey_folder, tmp_path):
    save_model(UNet(UNetConfig(width=4)), tmp_path / 'ck')
    r = evaluate_deblur(tmp_path / 'ck', grey_folder, KS[:1], sigma=0.0)
    b = evaluate_deblur(blurred_method(), grey_folder, KS[:1], sigma=0.0)
    assert [x['psnr'] for x in r['per_image']] == pytest.approx([x['psnr'] for x in b['per_image']], abs=1e-4)   # untrained U-Net = identity


def test_classical_methods_beat_the_input(grey_folder):
    base = evaluate_deblur(blurred_method(), grey_folder, KS, 0.01)['metrics']['psnr']
    for m in (rl_method(20), wiener_method(1e-2)):
        assert evaluate_deblur(m, grey_folder, KS, 0.01)['metrics']['psnr'] > base


def test_skimage_method_is_zero_boundary_rl(grey_folder):
    from restore_nb.deconv import zero_padded_richardson_lucy
    y = torch.rand(1, 1, 40, 40, dtype=torch.float64)
    k = KS[1].double()
    ours = zero_padded_richardson_lucy(y, k, iters=5)
    theirs = skimage_rl_method(5)(y, k).double()
    assert (ours - theirs).abs().max() < 1e-5


def test_tune_classical_returns_the_argmax(grey_folder):
    t = tune_classical(grey_folder, KS[:1], 0.01, iters=(2, 15), balances=(1e-4, 1e-2), max_images=2)
    assert t['rl_iters'] == max(t['rl_psnr'], key=t['rl_psnr'].get)
    assert t['wiener_balance'] == max(t['wiener_psnr'], key=t['wiener_psnr'].get)


def test_kernel_larger_than_image_is_a_clear_error(grey_folder):
    with pytest.raises(ValueError, match='larger than image'):
        evaluate_deblur(rl_method(2), grey_folder, [torch.ones(101, 101) / 101 ** 2])


def test_rl_speed_reports_identical_same_boundary_iterates():
    r = rl_speed(batch=2, size=48, big=0, iters=3, kernel_size=7)
    assert r['same_boundary_max_abs_diff'] < 1e-8 and r['batch']['speedup'] > 0
