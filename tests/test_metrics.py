"""restore_nb.metrics and losses: agreement with scikit-image / scikit-learn, known values, errors, offline use."""
import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import roc_auc_score

import restore_nb.metrics as M
from restore_nb.metrics import rgb_to_y, psnr, ssim, LPIPS, lpips_distance, auroc
from restore_nb.losses import (rgb_to_cbcr, L1Loss, MSELoss, SSIMLoss, GradientLoss, ChromaLoss, PerceptualLoss,
                               KernelLoss,
                               CombinedLoss, psnr_metric, ssim_metric, DEMOSAIC_WEIGHTS)
from restore_nb.core import sample_images


def _pair(c=3, b=3, h=48, w=40, sigma=0.08, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(b, c, h, w, generator=g)
    y = F.avg_pool2d(y, 3, 1, 1)                      # some spatial correlation, like an image
    x = (y + sigma * torch.randn(y.shape, generator=g)).clamp(0, 1)
    return x, y


def _np(a): return a.permute(1, 2, 0).double().numpy()  # (C,H,W) tensor -> (H,W,C) float64 for skimage


@pytest.fixture
def offline(monkeypatch, tmp_path):
    "Every pretrained-weight download fails at once, and the torch hub cache is an empty folder."
    def fail(*a, **k): raise OSError('network disabled in tests')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', fail)
    monkeypatch.setattr(torchvision.models._api.WeightsEnum, 'get_state_dict', fail)
    return tmp_path / 'torch' / 'hub' / 'checkpoints'


# ---------------------------------------------------------------- Y conversion

def test_rgb_to_y_is_matlab_bt601_and_matches_skimage():
    x = sample_images('astronaut', size=32)['astronaut'][None]
    expected = (16 + 65.481 * x[:, 0] + 128.553 * x[:, 1] + 24.966 * x[:, 2]) / 255
    y = rgb_to_y(x)
    assert y.shape == (1, 1, 32, 32)
    torch.testing.assert_close(y[:, 0], expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(y[0, 0].numpy(), rgb2ycbcr(_np(x[0]))[..., 0] / 255, atol=1e-5)
    g = torch.rand(2, 1, 5, 5)
    assert rgb_to_y(g) is g                              # grey passes through
    with pytest.raises(ValueError, match=r'`x` must have 3 \(RGB\) or 1 \(grey\) channels, got 2'):
        rgb_to_y(torch.rand(1, 2, 5, 5))


def test_rgb_to_cbcr_matches_skimage():
    x = torch.rand(3, 7, 9)
    np.testing.assert_allclose(rgb_to_cbcr(x).permute(1, 2, 0).numpy(), rgb2ycbcr(_np(x))[..., 1:] / 255, atol=1e-5)


# ---------------------------------------------------------------- PSNR

@pytest.mark.parametrize('c', [1, 3])
def test_psnr_matches_skimage_per_image(c):
    x, y = _pair(c=c)
    ours = psnr(x, y, reduction='none')
    ref = [peak_signal_noise_ratio(_np(y[i]), _np(x[i]), data_range=1) for i in range(len(x))]
    assert ours.shape == (3,)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-3)
    assert abs(psnr(x, y).item() - np.mean(ref)) < 1e-3   # 'mean' is the mean of per-image PSNRs


def test_psnr_data_range_255_matches_skimage():
    x, y = _pair()
    ref = peak_signal_noise_ratio(_np(y[0] * 255), _np(x[0] * 255), data_range=255)
    assert abs(psnr(x[:1] * 255, y[:1] * 255, data_range=255).item() - ref) < 1e-3


def test_psnr_constant_offset_known_values():
    y = torch.rand(4, 3, 16, 16) * 0.7
    torch.testing.assert_close(psnr(y + 0.1, y, reduction='none'), torch.full((4,), 20.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(psnr(y + 0.01, y), torch.tensor(40.0), atol=1e-3, rtol=0)
    # on Y an equal RGB offset delta becomes delta*219/255
    assert abs(psnr(y + 0.1, y, y_channel=True).item() + 20 * math.log10(0.1 * 219 / 255)) < 1e-4
    assert psnr(y, y).item() == math.inf


def test_psnr_border_and_y_channel_equal_manual_computation():
    x, y = _pair()
    b = 4
    manual = psnr(rgb_to_y(x)[..., b:-b, b:-b], rgb_to_y(y)[..., b:-b, b:-b], reduction='none')
    torch.testing.assert_close(psnr(x, y, y_channel=True, border=b, reduction='none'), manual)
    # errors only in the border are invisible with border cropping
    z = y.clone()
    z[..., :b, :] += 0.3
    assert psnr(z, y, border=b).item() == math.inf and psnr(z, y).item() < 40


def test_reductions():
    x, y = _pair(b=4)
    for f in (psnr, ssim):
        per = f(x, y, reduction='none')
        assert per.shape == (4,)
        torch.testing.assert_close(f(x, y), per.mean())
        torch.testing.assert_close(f(x, y, reduction='sum'), per.sum())
        # each image's value does not depend on the rest of the batch
        torch.testing.assert_close(f(x[2:3], y[2:3], reduction='none'), per[2:3])


# ---------------------------------------------------------------- SSIM

@pytest.mark.parametrize('c', [1, 3])
def test_ssim_matches_skimage_gaussian_convention(c):
    x, y = _pair(c=c, h=37, w=50)
    ours = ssim(x, y, reduction='none')
    ref = [structural_similarity(_np(y[i]), _np(x[i]), data_range=1, channel_axis=-1, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False) for i in range(len(x))]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-3)


def test_ssim_on_y_with_border_matches_skimage_on_cropped_luma():
    img = sample_images(['coffee', 'chelsea'], size=64)
    y = torch.stack(list(img.values()))
    x = F.avg_pool2d(y, 3, 1, 1, count_include_pad=False)   # a mild blur
    ours = ssim(x, y, y_channel=True, border=3, reduction='none')
    for i in range(2):
        a, b = (rgb2ycbcr(_np(t[i]))[3:-3, 3:-3, 0] / 255 for t in (y, x))
        ref = structural_similarity(a, b, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert abs(ours[i].item() - ref) < 1e-3


def test_ssim_known_values():
    x, y = _pair()
    assert torch.equal(ssim(y, y, reduction='none'), torch.ones(3))      # exactly 1 (kornia eps=0)
    assert ssim(1 - y, y).item() < 0 < ssim(x, y).item() < 1


# ---------------------------------------------------------------- input errors

_x = torch.rand(2, 3, 32, 32)

@pytest.mark.parametrize('call, match', [
    (lambda: psnr(_x, _x[:, :, :16]), r'`x` and `y` must have the same shape'),
    (lambda: ssim(_x, _x[:1]), r'`x` and `y` must have the same shape'),
    (lambda: psnr(_x.masked_fill(_x > 0.99, float('nan')), _x), r'`x` contains NaN or Inf'),
    (lambda: ssim(_x, _x.masked_fill(_x > 0.99, float('inf'))), r'`y` contains NaN or Inf'),
    (lambda: psnr(_x[:, :2], _x[:, :2], y_channel=True), r'3 \(RGB\) or 1 \(grey\) channels, got 2'),
    (lambda: psnr(_x, _x, border=16), r'`border`=16 is too large'),
    (lambda: ssim(_x, _x, border=11), r'`border`=11 is too large for images of size 32x32'),
    (lambda: psnr(_x, _x, border=-1), r'`border` must be a non-negative int'),
    (lambda: psnr(_x, _x, data_range=0), r'`data_range` must be a positive number'),
    (lambda: psnr(_x, _x, reduction='max'), r'`reduction` must be one of'),
    (lambda: psnr(_x[0, 0], _x[0, 0]), r'`x` must have shape \(B,C,H,W\)'),
    (lambda: psnr(_x.numpy(), _x), r'`x` must be a torch.Tensor'),
    (lambda: L1Loss()(_x, _x[:1]), r'`pred` and `target` must have the same shape'),
    (lambda: GradientLoss()(_x * float('nan'), _x), r'`pred` contains NaN or Inf'),
    (lambda: ChromaLoss()(_x[:, :1], _x[:, :1]), r'must be RGB \(3 channels\), got 1'),
    (lambda: LPIPS('alex', pretrained=False)(_x[:, :2], _x[:, :2]), r'3 \(RGB\) or 1 \(grey\) channels, got 2'),
])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match): call()


def test_half_precision_inputs_are_measured_in_float32():
    x, y = _pair()
    for f in (psnr, ssim):
        v = f(x.half(), y.half())
        assert v.dtype == torch.float32 and abs(v.item() - f(x.half().float(), y.half().float()).item()) < 1e-6


def test_single_image_is_a_batch_of_one():
    x, y = _pair(b=1)
    assert psnr(x[0], y[0], reduction='none').shape == (1,)
    torch.testing.assert_close(ssim(x[0], y[0]), ssim(x, y))


# ---------------------------------------------------------------- AUROC

@pytest.mark.parametrize('seed, decimals', [(0, None), (1, 1), (2, 0), (3, 2)])
def test_auroc_matches_sklearn_including_ties(seed, decimals):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(labels * 0.7, 1.0)
    if decimals is not None: scores = np.round(scores, decimals)   # decimals=0: heavy ties
    assert abs(auroc(scores, labels) - roc_auc_score(labels, scores)) < 1e-9
    assert abs(auroc(torch.from_numpy(scores).float(), torch.from_numpy(labels.astype(bool)))
               - roc_auc_score(labels, np.float32(scores))) < 1e-9


def test_auroc_known_values_and_errors():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([0.5] * 6, [0, 1] * 3) == 0.5
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert isinstance(auroc([1., 2.], [0, 1]), float)
    with pytest.raises(ValueError, match='both classes'): auroc([1., 2., 3.], [1, 1, 1])
    with pytest.raises(ValueError, match='0/1 or boolean'): auroc([1., 2.], [0, 2])
    with pytest.raises(ValueError, match='same length'): auroc([1., 2., 3.], [0, 1])
    with pytest.raises(ValueError, match='NaN or Inf'): auroc([1., float('nan')], [0, 1])


# ---------------------------------------------------------------- LPIPS

def test_lpips_offline_raises_helpful_runtime_error(offline):
    m = LPIPS('alex')                       # lazy: building needs no weights ...
    assert m.model is None
    with pytest.raises(RuntimeError) as e:  # ... the first call does
        m(_x, _x)
    msg = str(e.value)
    assert "LPIPS(net='alex')" in msg and 'alexnet' in msg
    assert 'alexnet-owt-7be5be79.pth' in msg and '$TORCH_HOME/hub/checkpoints' in msg
    assert str(offline) in msg and 'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth' in msg
    assert 'pretrained=False' in msg and 'network disabled in tests' in msg
    assert not list(offline.glob('*.pth'))


def test_lpips_distance_offline_error_and_cache(offline, monkeypatch):
    monkeypatch.setattr(M, '_LPIPS_CACHE', {})
    with pytest.raises(RuntimeError, match='hub/checkpoints'): lpips_distance(_x, _x, net='vgg')
    monkeypatch.setattr(M, 'LPIPS', lambda net: LPIPS(net, pretrained=False))
    d1 = lpips_distance(_x, _x.flip(0), net='alex')
    model = M._LPIPS_CACHE['alex']
    d2 = lpips_distance(_x, _x.flip(0), net='alex')
    assert M._LPIPS_CACHE['alex'] is model and torch.equal(d1, d2) and d1.shape == (2,)


def test_lpips_random_backbone_shapes_determinism_and_gradients():
    x, y = _pair(b=2, h=64, w=64)
    m = LPIPS('alex', pretrained=False)
    d = m(x, y)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.equal(m(y, y), torch.zeros(2))
    assert torch.equal(LPIPS('alex', pretrained=False)(x, y), d)     # seeded random backbone
    g = m(x[:, :1], y[:, :1])                                         # grey is repeated to RGB
    torch.testing.assert_close(g, m(x[:, :1].expand(-1, 3, -1, -1), y[:, :1].expand(-1, 3, -1, -1)))
    p = x.clone().requires_grad_()
    m(p, y).sum().backward()
    assert p.grad.abs().sum() > 0 and not any(q.requires_grad for q in m.parameters())
    m.train()
    assert not m.model.training and torch.equal(m(x, y), d)          # dropout never switches on


# ---------------------------------------------------------------- losses

def _all_losses():
    return {'l1': L1Loss(), 'mse': MSELoss(), 'ssim': SSIMLoss(), 'gradient': GradientLoss(), 'chroma': ChromaLoss(),
            'perceptual': PerceptualLoss(layers=('relu1_2', 'relu2_2', 'relu3_3')), 'combined': CombinedLoss(),
            'combined_all': CombinedLoss(l1=1, mse=1, ssim=0.5, gradient=0.1, chroma=0.05, perceptual=0.1)}


@pytest.fixture(scope='module')
def losses(): return _all_losses()


@pytest.mark.parametrize('name', list(_all_losses()))
def test_loss_zero_for_identical_positive_otherwise_and_scalar(losses, name):
    f = losses[name]
    x, y = _pair(b=2, h=32, w=32)
    same = f(y, y.clone())
    assert same.ndim == 0 and abs(same.item()) < 1e-6
    assert f(x, y).ndim == 0 and f(x, y).item() > 1e-4
    blur = F.avg_pool2d(y, 5, 1, 2, count_include_pad=False)
    assert f(blur, y).item() > 1e-4


@pytest.mark.parametrize('name', list(_all_losses()))
def test_gradients_flow_through_every_loss(losses, name):
    x, y = _pair(b=2, h=32, w=32)
    p = x.clone().requires_grad_()
    losses[name](p, y).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_losses_equal_their_definitions():
    x, y = _pair()
    torch.testing.assert_close(L1Loss()(x, y), F.l1_loss(x, y))
    torch.testing.assert_close(MSELoss()(x, y), F.mse_loss(x, y))
    torch.testing.assert_close(SSIMLoss()(x, y), 1 - ssim(x, y))
    # gradient loss on a tiny example by hand
    p = torch.tensor([[[[0., 1.], [3., 5.]]]])
    t = torch.zeros_like(p)
    # dx = [1, 2] -> mean 1.5; dy = [3, 4] -> mean 3.5
    assert GradientLoss()(p, t).item() == pytest.approx(5.0)
    ref = np.abs(rgb2ycbcr(_np(x[0]))[..., 1:] - rgb2ycbcr(_np(y[0]))[..., 1:]).mean() / 255
    assert ChromaLoss()(x[:1], y[:1]).item() == pytest.approx(ref, abs=1e-6)


def test_loss_null_spaces():
    _, y = _pair()
    assert GradientLoss()(y + 0.2, y).item() < 1e-6                  # constant offset: no gradient change
    assert ChromaLoss()(y + 0.2, y).item() < 1e-6                    # grey shift: no chroma change
    assert ChromaLoss()(y[:, [1, 0, 2]], y).item() > 1e-3            # swapping channels is a colour error


def test_losses_batch_reduction_is_the_mean():
    x, y = _pair(b=4)
    for f in (SSIMLoss(), L1Loss()):
        per = torch.stack([f(x[i:i + 1], y[i:i + 1]) for i in range(4)])
        torch.testing.assert_close(f(x, y), per.mean())


# ---------------------------------------------------------------- perceptual loss

def test_perceptual_loss_random_weights_fixed_frozen_and_eval():
    x, y = _pair(b=2, h=32, w=32)
    a, b = PerceptualLoss(layers=('relu1_2', 'relu2_2')), PerceptualLoss(layers=('relu1_2', 'relu2_2'))
    assert torch.equal(a(x, y), b(x, y))
    assert not torch.equal(a(x, y), PerceptualLoss(layers=('relu1_2', 'relu2_2'), seed=1)(x, y))
    assert not any(p.requires_grad for p in a.parameters())
    assert len(a.features) == 9                                       # truncated after relu2_2 (index 8)
    a.train()
    assert not a.features.training
    # default equal weights: the loss is the mean of the single-layer losses
    one = [PerceptualLoss(layers=(l,))(x, y) for l in ('relu1_2', 'relu2_2')]
    torch.testing.assert_close(a(x, y), (one[0] + one[1]) / 2)
    torch.testing.assert_close(PerceptualLoss(layers=(8, 3), layer_weights=(0., 1.))(x, y), one[0])
    with pytest.raises(ValueError, match='`layers` must be names'): PerceptualLoss(layers=('conv9',))


def test_perceptual_loss_imagenet_offline_error(offline):
    with pytest.raises(RuntimeError) as e: PerceptualLoss(weights='imagenet')
    assert 'vgg16-397923af.pth' in str(e.value) and str(offline) in str(e.value)


def test_perceptual_loss_loads_torchvision_vgg16_checkpoint_layout(monkeypatch):
    "weights='imagenet' maps the `features.*` entries of torchvision's VGG16 checkpoint onto our layers."
    with torch.device('meta'): ref = torchvision.models.vgg16()
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) for k, v in ref.state_dict().items() if k.startswith('features.')}
    sd['classifier.0.weight'] = torch.zeros(1)                      # ignored
    monkeypatch.setattr(torchvision.models._api.WeightsEnum, 'get_state_dict', lambda self, *a, **k: sd)
    m = PerceptualLoss(weights='imagenet', layers=('relu5_3',))
    assert len(m.features) == 30
    for k, v in m.features.state_dict().items(): assert torch.equal(v, sd['features.' + k]), k


# ---------------------------------------------------------------- kernel loss

def _kernel(cy=7, cx=7, size=15):
    r = torch.arange(size, dtype=torch.float32)
    d2 = (r[:, None] - cy) ** 2 + (r[None] - cx) ** 2
    k = torch.exp(-d2 / 4.5) * (d2 <= 16)
    return k / k.sum()


def test_kernel_loss_shift_invariance():
    k = torch.stack([_kernel(), _kernel()])
    ks = torch.stack([torch.roll(k[0], (1, -1), (0, 1)), torch.roll(k[1], (-2, 0), (0, 1))])
    plain, s1, s2 = KernelLoss()(ks, k), KernelLoss(shift=1)(ks, k), KernelLoss(shift=2)
    per1 = KernelLoss(shift=1, reduction='none')(ks, k)
    assert per1.shape == (2,) and per1[0].item() < 1e-6 and per1[1].item() > 0.1
    assert s2(ks, k).item() < 1e-6 and plain.item() > s1.item() > 0
    # no mass is lost off the frame: shifting a corner spike out of the frame does not make it vanish
    e = torch.zeros(1, 5, 5)
    e[0, 0, 0] = 1.
    assert KernelLoss(shift=2)(e, e.roll(1, 2)).item() < 1e-6
    assert KernelLoss(shift=2)(e, torch.zeros_like(e)).item() == pytest.approx(1.0)


def test_kernel_loss_values_gradients_and_errors():
    k = _kernel()[None]
    assert KernelLoss('l1')(k + 0.01, k).item() == pytest.approx(15 * 15 * 0.01, rel=1e-5)
    assert KernelLoss('l2')(k + 0.01, k).item() == pytest.approx(15 * 15 * 1e-4, rel=1e-4)
    assert KernelLoss(shift=2)(k, k).item() == 0.0 and KernelLoss()(k[0], k[0]).ndim == 0
    p = torch.roll(k, (1, 1), (1, 2)).clone().requires_grad_()
    KernelLoss(shift=1)((p * 1.1), k).backward()
    assert p.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='same shape'): KernelLoss()(k, k[:, :-1])
    with pytest.raises(ValueError, match='non-negative int'): KernelLoss(shift=-1)
    with pytest.raises(ValueError, match=r"'l1' or 'l2'"): KernelLoss('huber')
    with pytest.raises(ValueError, match=r'\(B,kh,kw\)'): KernelLoss()(k[None], k[None])


# ---------------------------------------------------------------- combined loss

def test_combined_loss_default_is_demosaic_and_logs_components():
    x, y = _pair()
    cl = CombinedLoss()
    assert cl.weights == DEMOSAIC_WEIGHTS == {'l1': 1.0, 'gradient': 0.1, 'chroma': 0.05}
    total = cl(x, y)
    expected = L1Loss()(x, y) + 0.1 * GradientLoss()(x, y) + 0.05 * ChromaLoss()(x, y)
    torch.testing.assert_close(total, expected)
    assert set(cl.last) == {'l1', 'gradient', 'chroma', 'total'}
    torch.testing.assert_close(cl.last['gradient'], GradientLoss()(x, y))
    torch.testing.assert_close(cl.last['total'], expected)


def test_combined_loss_forms_and_errors():
    x, y = _pair()
    cl = CombinedLoss(l1=1.0, ssim=0.5)
    assert list(cl.weights) == ['l1', 'ssim']                         # exactly the named terms
    torch.testing.assert_close(cl(x, y), F.l1_loss(x, y) + 0.5 * (1 - ssim(x, y)))
    cd = CombinedLoss({'mse': (MSELoss(), 2.0), 'fn': (lambda p, t: (p - t).abs().max(), 1.0), 'plain': L1Loss()})
    torch.testing.assert_close(cd(x, y), 2 * F.mse_loss(x, y) + (x - y).abs().max() + F.l1_loss(x, y))
    p = x.clone().requires_grad_()
    cd(p, y).backward()
    assert all(not v.requires_grad for v in cd.last.values())
    with pytest.raises(ValueError, match=r"unknown loss name\(s\) \['tv'\]"): CombinedLoss(l1=1.0, tv=0.1)
    with pytest.raises(ValueError, match='not both'): CombinedLoss({'l1': L1Loss()}, l1=1.0)
    with pytest.raises(ValueError, match='finite number >= 0'): CombinedLoss(l1=-1.0)
    with pytest.raises(ValueError, match='reserved'): CombinedLoss({'total': L1Loss()})


# ---------------------------------------------------------------- fastai

def test_fastai_metrics_and_loss_in_a_learner():
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.torch_core import TensorImage
    x, y = _pair(b=8, h=24, w=24)
    # metric functions: batch means, prediction clipped to [0, 1], fastai tensor subclasses accepted
    torch.testing.assert_close(psnr_metric(x * 1.3, y), psnr((x * 1.3).clamp(0, 1), y))
    torch.testing.assert_close(ssim_metric(x, y), ssim(x, y))
    assert torch.isfinite(psnr_metric(TensorImage(x), TensorImage(y)))
    ds = list(zip(x, y))
    dls = DataLoaders.from_dsets(ds, ds, bs=4, device='cpu')
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    learn = Learner(dls, model, loss_func=CombinedLoss(), metrics=[psnr_metric, ssim_metric])
    learn.logger = lambda *a, **k: None
    learn.fit(1, 1e-3)
    vals = learn.recorder.values[-1]                                  # train loss, valid loss, psnr, ssim
    assert len(vals) == 4 and all(math.isfinite(v) for v in vals)
    assert set(learn.loss_func.last) == {'l1', 'gradient', 'chroma', 'total'}
