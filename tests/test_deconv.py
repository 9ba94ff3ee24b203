"""restore_nb.solvers and models.unrolled: solvers against references and exact properties; the network's contracts."""
import numpy as np
import pytest
import torch
from restore_nb.core import save_model, load_model, count_parameters
from restore_nb.physics import Blur, motion_kernel, shake_kernel, gaussian_kernel
from restore_nb.solvers import (richardson_lucy, zero_padded_richardson_lucy, wiener, tv_divergence, project_simplex,
                                blind_richardson_lucy, mirror_extend)
from restore_nb.models import UnrolledRL, UnrolledRLConfig, UNet

g = torch.Generator().manual_seed(0)
X = torch.rand(3, 3, 40, 48, generator=g, dtype=torch.float64)


def test_zero_boundary_rl_matches_skimage_iterates():
    from skimage.restoration import richardson_lucy as sk
    k = shake_kernel(9, seed=1).double()
    y = Blur(k, boundary='circular')(X[:1, :1])
    for it in (1, 7):
        ref = sk(y[0, 0].numpy(), k.numpy(), num_iter=it, clip=False)
        ours = zero_padded_richardson_lucy(y, k, iters=it)[0, 0].numpy()
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)


def test_rl_keeps_a_constant_image_fixed_with_asymmetric_kernel():
    "Normalising by Aᵀ1 makes a constant image a fixed point at the reflective border, for any kernel."
    k = shake_kernel(11, seed=4).double()
    assert not torch.allclose(k, k.flip(-1))
    y = torch.full((1, 1, 32, 32), 0.3, dtype=torch.float64)
    A = Blur(k)
    np.testing.assert_allclose(A.adjoint(torch.ones_like(y)).min().item() < 0.999, True)   # Aᵀ1 ≠ 1 at the border
    torch.testing.assert_close(richardson_lucy(A(y), A, iters=10, x0=y), y, rtol=0, atol=1e-12)


def test_rl_batch_with_per_image_kernels_equals_single_runs():
    ks = torch.stack([motion_kernel(7, a, size=9) for a in (0.0, 60.0, 120.0)]).double()
    A = Blur(ks)
    y = A(X)
    batch = richardson_lucy(y, A, iters=8)
    for i in range(3):
        torch.testing.assert_close(batch[i:i + 1], richardson_lucy(y[i:i + 1], Blur(ks[i]), iters=8), rtol=1e-10,
                                   atol=1e-12)


def test_rl_early_stopping_freezes_each_image_independently():
    A = Blur(gaussian_kernel(1.0).double())
    y = A(X)
    y[0] = 0.5                                  # image 0 is flat: a fixed point, converged at once
    calls = []
    richardson_lucy(y, A, iters=20, tol=1e-6, callback=lambda t, x: calls.append(x.clone()))
    assert len(calls) == 20                     # the textured images keep going ...
    assert all(torch.equal(c[0], calls[0][0]) for c in calls)      # ... while image 0 stopped changing
    assert not torch.equal(calls[1][1], calls[-1][1])
    calls.clear()
    richardson_lucy(y[:1], A, iters=200, tol=1e-6, callback=lambda t, x: calls.append(t))
    assert len(calls) <= 2                      # a batch whose images all converged stops


def test_rl_monotone_likelihood_noise_free():
    "RL increases the Poisson log-likelihood Σ y log(Ax) − Ax at every step (noise-free, circular)."
    A = Blur(motion_kernel(9, 30.0).double(), boundary='circular')
    y = A(X[:1]) + 0.01
    ll = []
    richardson_lucy(y, A, iters=15, eps=1e-12, callback=lambda t,
                    x: ll.append(float((y * torch.log(A(x)) - A(x)).sum())))
    assert all(b >= a - 1e-9 for a, b in zip(ll, ll[1:]))


def test_tv_divergence_vanishes_on_ramps_and_is_sign_correct():
    ramp = torch.linspace(0, 1, 20).view(1, 1, 1, 20).expand(1, 1, 16, 20).double()
    assert tv_divergence(ramp)[..., 1:-1, 1:-2].abs().max() < 1e-8     # zero up to rounding of the ramp
    spike = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    spike[..., 4, 4] = 1
    assert tv_divergence(spike)[..., 4, 4] < 0    # a local maximum has negative curvature


def test_wiener_circular_is_the_exact_inverse_and_reflect_exact_for_symmetric_kernels():
    k = gaussian_kernel(0.8).double()
    torch.testing.assert_close(wiener(Blur(k, 'circular')(X), k, 1e-12, 'circular'), X, rtol=0, atol=1e-5)
    torch.testing.assert_close(wiener(Blur(k)(X), k, 1e-12), X, rtol=0, atol=1e-5)


def test_mirror_extension_makes_reflect_blur_circular():
    "For a kernel symmetric in both axes, reflect-blur of x = circular blur of the mirror extension, cropped."
    k = gaussian_kernel(1.3).double()
    torch.testing.assert_close(Blur(k)(X), Blur(k, 'circular')(mirror_extend(X))[..., :40, :48], rtol=0, atol=1e-12)


def _simplex_bisect(v, iters=200):
    lo, hi = v.min() - 1, v.max()
    for _ in range(iters):
        t = (lo + hi) / 2
        if (v - t).clamp_min(0).sum() > 1: lo = t
        else: hi = t
    return (v - (lo + hi) / 2).clamp_min(0)


def test_project_simplex_matches_bisection_reference():
    v = torch.randn(6, 5, 5, generator=g, dtype=torch.float64) * 0.3
    p = project_simplex(v)
    for i in range(6): torch.testing.assert_close(p[i], _simplex_bisect(v[i]), rtol=0, atol=1e-9)


def test_blind_rl_outputs_and_errors():
    k = gaussian_kernel(1.5, size=11)
    y = Blur(k)(X[:2].float())
    x, kh = blind_richardson_lucy(y, kernel_size=11, iters=5)
    assert x.shape == y.shape and kh.shape == (2, 11, 11)
    assert (kh >= 0).all() and torch.allclose(kh.sum((-2, -1)), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match='larger than the image'): blind_richardson_lucy(y, kernel_size=51)
    with pytest.raises(ValueError, match='odd'): blind_richardson_lucy(y, kernel_size=10)


def test_unrolled_rl_is_batch_independent_and_takes_per_image_kernels():
    torch.manual_seed(0)
    net = UnrolledRL(layers=3, prior_width=8).eval()
    y = X.float()
    ks = torch.stack([motion_kernel(7, a, size=9) for a in (0.0, 45.0, 90.0)])
    with torch.no_grad():
        full = net(y, Blur(ks))
        for i in range(3):
            torch.testing.assert_close(full[i:i + 1], net(y[i:i + 1], Blur(ks[i:i + 1])), rtol=1e-5, atol=1e-6)


def test_unrolled_rl_bad_inputs():
    net = UnrolledRL(layers=2)
    y = X[:2].float()
    with pytest.raises(ValueError, match='needs the blur operator'): net(y)
    with pytest.raises(ValueError, match='needs the blur operator'):  # a tensor is not an operator
        net(y, torch.ones(1, 5, 5) / 25)
    with pytest.raises(ValueError, match='2 images'): net(y, Blur(torch.ones(3, 5, 5) / 25))
    with pytest.raises(ValueError, match=r'\(B,3,H,W\)'): net(y[:, :1], Blur(torch.ones(5, 5) / 25))
    with pytest.raises(ValueError): net(y, Blur(torch.full((5, 5), float('nan'))))
    with pytest.raises(ValueError, match='layers'): UnrolledRL(layers=0)
    with pytest.raises(ValueError, match='kernel_size'): UnrolledRL(blind=True, kernel_size=8)


def test_unet_any_size_identity_at_init():
    u = UNet(width=4, depth=3)
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad(): assert torch.equal(u(x), x)
    assert count_parameters(UNet(width=16)) > count_parameters(UnrolledRL())


@pytest.mark.parametrize('cfg',
                         [UnrolledRLConfig(layers=2, prior_width=8), UnrolledRLConfig(layers=2, blind=True,
                                                                                      kernel_size=9, prior_width=8)])
def test_checkpoint_round_trip_reproduces_outputs(tmp_path, cfg):
    torch.manual_seed(1)
    net = UnrolledRL(cfg)
    with torch.no_grad():
        for p in net.parameters(): p.add_(0.01 * torch.randn_like(p))
    save_model(net, tmp_path / 'ck')
    net2 = load_model(tmp_path / 'ck')
    y = X[:1].float()
    k = gaussian_kernel(1.0, size=9)
    with torch.no_grad(): torch.testing.assert_close(net.eval()(y, Blur(k)), net2(y, Blur(k)), rtol=0, atol=0)
    assert net2.config == cfg
