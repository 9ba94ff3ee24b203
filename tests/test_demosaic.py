"""restore_nb.demosaic: CFA encoding, the baseline, training pairs, the network, the evaluation protocol."""
import numpy as np
import pytest
import torch
from restore_nb.physics import Mosaic, _CFA
from restore_nb.raw import mosaic_with
from restore_nb.data import ImageSource
from restore_nb.demosaic import (cfa_masks, normalized_conv, DemosaicNet, DemosaicPairs, demosaic_dataloaders, demosaic_learner,
                                 evaluate_demosaic, baseline_method, classical_method, libraw_method, net_method, to_linear, to_srgb)


@pytest.mark.parametrize('name', ['RGGB', 'GRBG', 'XTRANS'])
@pytest.mark.parametrize('phase', [(0, 0), (1, 1)])
def test_masks_and_baseline_keep_the_samples(name, phase):
    pat = Mosaic(name, phase=phase).pattern
    x = torch.rand(2, 3, 36, 30)
    y = mosaic_with(x, pat)
    m = cfa_masks(pat, 36, 30)
    assert torch.equal(m.sum(0), torch.ones(36, 30)) and torch.equal((m * x).sum(1, keepdim=True), y)
    out = normalized_conv(y, m)
    assert torch.allclose((out * m).sum(1, keepdim=True), y) and torch.isfinite(out).all()


def test_baseline_is_bilinear_on_bayer():
    import colour_demosaicing as cd
    x = torch.rand(1, 3, 40, 40, dtype=torch.float64)
    y = mosaic_with(x, _CFA['RGGB'])
    ref = torch.from_numpy(cd.demosaicing_CFA_Bayer_bilinear(y[0, 0].numpy(), 'RGGB')).permute(2, 0, 1)
    ours = normalized_conv(y, cfa_masks(_CFA['RGGB'], 40, 40).double())[0]
    assert (ours - ref)[:, 1:-1, 1:-1].abs().max() < 1e-12


def test_untrained_network_is_the_baseline_and_keeps_hdr():
    net = DemosaicNet(width=8, blocks=1)
    x = 2 * torch.rand(1, 3, 24, 24)                                 # linear values up to 2
    y = mosaic_with(x, _CFA['XTRANS']); m = cfa_masks(_CFA['XTRANS'], 24, 24)[None]
    assert torch.allclose(net(y, m), normalized_conv(y, m)) and net(y, m).max() > 1.5
    with pytest.raises(ValueError, match='sigma'): DemosaicNet(width=8, blocks=1, noise_level=True)(y, m)


def test_pairs_are_consistent_and_noise_is_applied():
    src = ImageSource('builtin')
    ds = DemosaicPairs(src, ['RGGB', 'XTRANS'], n=6, size=24, seed=2)
    for k in range(6):
        y, m, s, x = ds[k]
        assert torch.allclose((m * x).sum(0, keepdim=True), y)
    noisy = DemosaicPairs(src, 'RGGB', n=2, size=24, seed=2, noise=0.02)
    y, m, s, x = noisy[0]
    assert float(s) == pytest.approx(0.02) and (y - (m * x).sum(0, keepdim=True)).std() > 0.005
    with pytest.raises(ValueError, match='cfa'): DemosaicPairs(src, 'RGBW')


def test_evaluate_protocol_and_classical_methods():
    res = {n: evaluate_demosaic(f, 'builtin', 'bayer', max_images=2, crop=60) for n, f in
           (('bilinear', classical_method('bilinear')), ('menon', classical_method('menon')), ('ours0', baseline_method()), ('ahd', libraw_method('AHD')))}
    assert set(res['menon']) == {'task', 'protocol', 'metrics', 'per_image'}
    assert res['menon']['metrics']['psnr'] > res['bilinear']['metrics']['psnr']
    assert res['ours0']['metrics']['psnr'] == pytest.approx(res['bilinear']['metrics']['psnr'], abs=0.3)   # border handling differs
    assert res['ahd']['metrics']['psnr'] > res['bilinear']['metrics']['psnr'] - 1
    with pytest.raises(ValueError, match='Bayer'): evaluate_demosaic(classical_method('menon'), 'builtin', 'xtrans', max_images=1, crop=60)
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(to_srgb(to_linear(x)), x, atol=1e-5)


def test_learner_builds_with_both_losses():
    dls = demosaic_dataloaders(cfa='XTRANS', size=24, bs=4, n_train=8, n_valid=4, device='cpu')
    for loss in ('original', 'ssim'):
        learn = demosaic_learner(dls, loss=loss, width=8, blocks=1)
        assert 0 < learn.validate()[1] <= 100                          # sRGB PSNR, capped, finite on flat crops
    with pytest.raises(ValueError, match='loss'): demosaic_learner(dls, loss='mse')
