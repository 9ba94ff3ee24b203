"""restore_nb.evaluate with the deblurring task's protocol: the one evaluation loop, the classical baselines, Result."""
import json
import pytest
import torch
from restore_nb.core import save_image, save_model
from restore_nb.physics import Blur, motion_kernel, gaussian_kernel
from restore_nb.data import ImageSource
from restore_nb.models import UNet, UNetConfig
from restore_nb.evaluate import Result, evaluate
from restore_nb.solvers import zero_padded_richardson_lucy
from restore_nb.tasks.deblur import blur_degradations, rl_method, wiener_method, blurred_method, skimage_rl_method
from restore_nb.bench.deblur import tune_classical, rl_speed


@pytest.fixture
def grey_folder(tmp_path):
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        x = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 96, 96, generator=g), 3, 1, 1)[0]
        save_image(x, tmp_path / f'{i}.png')
    return tmp_path


KS = [motion_kernel(9, 40.0, size=11), gaussian_kernel(1.2, size=11)]


def mean_psnr(res, m):
    rows = [r['psnr'] for r in res.per_image if r['method'] == m]
    return sum(rows) / len(rows)


def test_protocol_is_reproducible_and_complete(grey_folder, tmp_path):
    a = evaluate({'rl': rl_method(10)}, grey_folder, blur_degradations(KS, 5.1), seed=3)
    b = evaluate({'rl': rl_method(10)}, grey_folder, blur_degradations(KS, 5.1), seed=3)
    strip = lambda r: [{k: v for k, v in q.items() if k != 'seconds'} for q in r.per_image]
    assert strip(a) == strip(b) and len(a.per_image) == 4
    assert {'task', 'protocol', 'metrics', 'per_image'} <= set(a.to_dict())
    a.save(tmp_path / 'r.json')
    # plain JSON
    assert json.loads((tmp_path / 'r.json').read_text())['per_image'] == json.loads(json.dumps(a.per_image))
    assert Result.load(tmp_path / 'r.json').metrics == json.loads(json.dumps(a.metrics))
    c = evaluate({'rl': rl_method(10)}, grey_folder, blur_degradations(KS, 5.1), seed=4)
    assert strip(c) != strip(a)                                    # the seed is the noise


def test_methods_see_the_same_degraded_inputs(grey_folder):
    "Every method is given identical inputs: a measurement is made once per (image, degradation)."
    seen = []
    def spy(y, A):
        seen.append((y.clone(), A.kernel.clone()))
        return y
    evaluate({'a': spy, 'b': spy}, grey_folder, blur_degradations(KS, 2.55), seed=0)
    for (y1, k1), (y2, k2) in zip(seen[0::2], seen[1::2]): assert torch.equal(y1, y2) and torch.equal(k1, k2)
    x0 = ImageSource(grey_folder, mode=None)[0][None]
    assert (seen[0][0] - Blur(KS[0])(x0)).std() == pytest.approx(0.01, rel=0.15)


def test_grey_images_run_through_colour_models(grey_folder, tmp_path):
    save_model(UNet(UNetConfig(width=4)), tmp_path / 'ck')
    r = evaluate({'unet': tmp_path / 'ck', 'blurred': blurred_method()}, grey_folder, blur_degradations(KS[:1], 0.0))
    assert [x['psnr'] for x in r.per_image if x['method'] == 'unet'] == pytest.approx(
        [x['psnr'] for x in r.per_image if x['method'] == 'blurred'], abs=1e-4)   # untrained U-Net = identity


def test_classical_methods_beat_the_input(grey_folder):
    r = evaluate({'blurred': blurred_method(), 'rl': rl_method(20), 'wiener': wiener_method(1e-2)}, grey_folder,
                 blur_degradations(KS, 2.55))
    assert mean_psnr(r, 'rl') > mean_psnr(r, 'blurred') and mean_psnr(r, 'wiener') > mean_psnr(r, 'blurred')


def test_skimage_method_is_zero_boundary_rl():
    y = torch.rand(1, 1, 40, 40, dtype=torch.float64)
    k = KS[1].double()
    ours = zero_padded_richardson_lucy(y, k, iters=5)
    theirs = skimage_rl_method(5)(y, Blur(k)).double()
    assert (ours - theirs).abs().max() < 1e-5


def test_tune_classical_returns_the_argmax(grey_folder):
    t = tune_classical(grey_folder, KS[:1], 2.55, iters=(2, 15), balances=(1e-4, 1e-2), max_images=2)
    assert t['rl_iters'] == max(t['rl_psnr'], key=t['rl_psnr'].get)
    assert t['wiener_balance'] == max(t['wiener_psnr'], key=t['wiener_psnr'].get)


def test_kernel_larger_than_image_is_a_clear_error(grey_folder):
    with pytest.raises(ValueError, match="larger than the image .* \(image 0, degradation 'kernel 0'\)"):
        evaluate(rl_method(2), grey_folder, blur_degradations([torch.ones(101, 101) / 101 ** 2]))


def test_rl_speed_reports_identical_same_boundary_iterates():
    r = rl_speed(batch=2, size=48, big=0, iters=3, kernel_size=7)
    assert r['same_boundary_max_abs_diff'] < 1e-8 and r['batch']['speedup'] > 0
