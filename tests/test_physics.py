"""restore_nb.physics: exact adjoints, agreement with scipy, kernel properties, noise laws, determinism, bad input."""
import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from restore_nb.physics import (LinearOperator, Blur, blur, blur_adjoint, check_kernel, motion_kernel, shake_kernel,
                                gaussian_kernel, disk_kernel, KernelSampler, Downsample, Mosaic, GaussianNoise,
                                PoissonGaussianNoise, JPEG, Compose, adjoint_error)

D64 = torch.float64
BOUNDARIES = [('reflect', 'reflect'), ('circular', 'wrap')]


def rand(*shape, seed=0, dtype=D64, normal=False):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn if normal else torch.rand)(*shape, generator=g, dtype=dtype)


def inner_gap(op, x, y):
    "|<Ax,y> - <x,A^T y>| relative to ||Ax|| ||y|| (strict: random signed vectors)."
    ax, aty = op(x), op.adjoint(y)
    assert ax.shape == y.shape and aty.shape == x.shape
    return ((ax * y).sum() - (x * aty).sum()).abs().item() / (ax.norm() * y.norm()).item()


def scipy_blur(x, k, mode):
    "Reference: scipy.ndimage.convolve per image and channel; k is (Bk,kh,kw)."
    x, k = x.numpy(), k.numpy()
    return np.stack([[ndimage.convolve(x[b, c], k[b % k.shape[0]], mode=mode) for c in range(x.shape[1])]
                     for b in range(x.shape[0])])


# ---------------------------------------------------------------- Blur vs scipy
@pytest.mark.parametrize('boundary,mode', BOUNDARIES)
@pytest.mark.parametrize('kshape', [(1, 1), (3, 3), (7, 5), (1, 9), (15, 15)])
def test_blur_matches_scipy_float64(boundary, mode, kshape):
    x, k = rand(2, 3, 17, 22, seed=1), rand(*kshape, seed=2)
    np.testing.assert_allclose(Blur(k, boundary)(x).numpy(), scipy_blur(x, k[None], mode), rtol=0,
                               atol=1e-10 * k.sum().item())


@pytest.mark.parametrize('boundary,mode', BOUNDARIES)
def test_blur_matches_scipy_float32_and_functional(boundary, mode):
    x, k = rand(2, 3, 32, 40, seed=3), rand(9, 7, seed=4)
    k = k / k.sum()
    ref = scipy_blur(x, k[None], mode)
    y = Blur(k.float(), boundary)(x.float())
    assert y.dtype == torch.float32
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(blur(x.float(), k.float(), boundary).numpy(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize('boundary,mode', BOUNDARIES)
def test_blur_per_image_kernels_match_scipy(boundary, mode):
    x, k = rand(3, 2, 19, 21, seed=5), rand(3, 5, 9, seed=6)
    ref = scipy_blur(x, k, mode)
    np.testing.assert_allclose(Blur(k, boundary)(x).numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(Blur(k[:, None], boundary)(x).numpy(), ref, atol=1e-10)  # (B,1,kh,kw) accepted


def test_blur_kernel_as_large_as_image():
    x, k = rand(1, 1, 9, 11, seed=7), rand(9, 11, seed=8)
    for boundary, mode in BOUNDARIES:
        np.testing.assert_allclose(blur(x, k, boundary).numpy(), scipy_blur(x, k[None], mode), atol=1e-10)


def test_blur_is_not_renormalised_and_stores_kernel_buffer():
    k = torch.ones(3, 3)  # sum 9
    A = Blur(k)
    assert A.kernel.shape == (1, 3, 3) and 'kernel' in dict(A.named_buffers())
    torch.testing.assert_close(A(torch.ones(1, 1, 8, 8)), torch.full((1, 1, 8, 8), 9.0))
    assert Blur(torch.ones(4, 1, 3, 3)).kernel.shape == (4, 3, 3)


def test_blur_spectrum_cache_follows_size_and_kernel():
    A = Blur(gaussian_kernel(1.0))
    for shape in [(1, 3, 16, 16), (2, 1, 20, 24), (1, 3, 16, 16)]:
        x = rand(*shape, dtype=torch.float32)
        torch.testing.assert_close(A(x), blur(x, gaussian_kernel(1.0)))
    B = A.with_kernel(motion_kernel(5, 0))
    assert B.boundary == A.boundary and B.kernel.shape == (1, 7, 7)
    x = rand(1, 3, 16, 16, dtype=torch.float32)
    torch.testing.assert_close(B(x), blur(x, motion_kernel(5, 0)))
    assert Blur(gaussian_kernel(1.0), 'circular').with_kernel(torch.ones(3, 3)).boundary == 'circular'


# ---------------------------------------------------------------- adjoints
@pytest.mark.parametrize('boundary', ['reflect', 'circular'])
@pytest.mark.parametrize('kshape', [(1, 1), (5, 5), (9, 3), (17, 17), (2, 7, 5)])
def test_blur_adjoint_exact(boundary, kshape):
    x, y, k = rand(2, 3, 17, 22, seed=1, normal=True), rand(2, 3, 17, 22, seed=2, normal=True), rand(*kshape, seed=3)
    A = Blur(k, boundary)
    assert inner_gap(A, x, y) < 1e-13
    assert isinstance(A, LinearOperator)
    torch.testing.assert_close(A.normal(x), A.adjoint(A(x)))
    torch.testing.assert_close(blur_adjoint(y, k, boundary), A.adjoint(y))


def test_reflect_adjoint_vs_flipped_kernel():
    "With half-sample symmetric padding the flipped-kernel blur is the adjoint only for kernels even in both axes;"
    "otherwise it is wrong exactly in the border band of width kh//2 (where the fold matters)."
    y = rand(1, 1, 20, 20, seed=4)
    for ks in (motion_kernel(7, 0), motion_kernel(7, 90), gaussian_kernel(1.0), disk_kernel(2.5)):
        ks = ks.double()
        torch.testing.assert_close(Blur(ks).adjoint(y), blur(y, ks.flip(0, 1)), atol=1e-13, rtol=0)
    for k in (rand(9, 9, seed=5), motion_kernel(7, 30).double()):             # generic / only point-symmetric
        p = k.shape[0] // 2
        diff = (Blur(k).adjoint(y) - blur(y, k.flip(0, 1))).abs()[0, 0]
        assert diff[2 * p:-2 * p, 2 * p:-2 * p].max() < 1e-12 and diff.max() > 1e-3


@pytest.mark.parametrize('boundary', ['reflect', 'circular'])
@pytest.mark.parametrize('kshape', [(7, 5), (2, 9, 9)])
def test_kernel_adjoint(boundary, kshape):
    x, r, k = rand(2, 3, 21, 18, seed=5), rand(2, 3, 21, 18, seed=6, normal=True), rand(*kshape, seed=7)
    A = Blur(k, boundary)
    G = A.kernel_adjoint(x, r)
    assert G.shape == A.kernel.shape
    lhs = (blur(x, k, boundary) * r).sum()
    assert abs((lhs - (A.kernel * G).sum()).item()) < 1e-12 * (blur(x, k, boundary).norm() * r.norm()).item()
    # it is also the gradient of <A_k x, r> w.r.t. the kernel
    kk = A.kernel.clone().requires_grad_(True)
    (blur(x, kk, boundary) * r).sum().backward()
    torch.testing.assert_close(kk.grad, G, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('direct', [False, True])
@pytest.mark.parametrize('boundary,mode', BOUNDARIES)
@pytest.mark.parametrize('kshape', [(9, 7), (2, 31, 31)])
def test_fft_and_direct_paths_match_scipy_and_are_adjoint(direct, boundary, mode, kshape):
    "Both paths, whichever the cost model would pick, compute scipy's convolution and its exact transpose."
    from restore_nb.physics.ops import _conv, _conv_adjoint, _kernel_adjoint
    x, y, k = rand(2, 3, 40, 45, seed=1), rand(2, 3, 40, 45, seed=2, normal=True), rand(*kshape, seed=3)
    kb = k if k.ndim == 3 else k[None]
    np.testing.assert_allclose(_conv(x, kb, boundary, direct=direct).numpy(), scipy_blur(x, kb, mode), atol=1e-10)
    lhs = (_conv(x, kb, boundary, direct=direct) * y).sum()
    assert abs(lhs - (x * _conv_adjoint(y, kb, boundary, direct=direct)).sum()) < 1e-12 * abs(lhs)
    assert abs(lhs - (kb * _kernel_adjoint(x, y, kb, boundary, direct=direct)).sum()) < 1e-12 * abs(lhs)


def test_fast_fft_sizes_and_path_choice():
    from restore_nb.physics.ops import _direct, fast_len
    assert [fast_len(n) for n in (1, 13, 272, 1040)] == [1, 14, 280, 1050]
    assert _direct(torch.empty(1, 1, 256, 256), torch.empty(1, 9, 9), 'reflect')
    assert not _direct(torch.empty(1, 1, 64, 64), torch.empty(1, 31, 31), 'reflect')


def test_blur_operator_passes_gradients_to_its_kernel():
    "A `Blur` built from a kernel that requires grad keeps its graph (the blind networks learn through it)."
    x, r = rand(2, 3, 12, 13, seed=4), rand(2, 3, 12, 13, seed=5, normal=True)
    k = rand(2, 5, 5, seed=6).requires_grad_(True)
    A = Blur(k)
    (A(x) * r).sum().backward()
    torch.testing.assert_close(k.grad, A.kernel_adjoint(x, r).detach(), rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda kk: Blur(kk).adjoint(r), (k.detach().clone().requires_grad_(True),))
    assert not Blur(k.detach()).kernel.requires_grad


def test_unchecked_skips_value_checks_only():
    from restore_nb.core import unchecked
    nan = torch.full((1, 1, 8, 8), float('nan'))
    with pytest.raises(ValueError, match='NaN'): Blur(torch.ones(3, 3))(nan)
    with unchecked():
        assert torch.isnan(Blur(torch.ones(3, 3))(nan)).all()
        with pytest.raises(ValueError, match='shape'): Blur(torch.ones(3, 3))(torch.rand(8, 8))


def test_functional_blur_gradients_in_image_and_kernel():
    x = rand(2, 1, 6, 7, seed=8).requires_grad_(True)
    k = rand(2, 3, 3, seed=9).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: blur(a, b), (x, k))
    assert torch.autograd.gradcheck(lambda a, b: blur_adjoint(a, b, 'circular'), (x, k))


@pytest.mark.parametrize('op', [Downsample(2, 'box'), Downsample(3, 'box'), Downsample(2, 'bilinear'),
                                Downsample(4, 'bicubic'), Downsample(2, 'gaussian'), Downsample(3, 'gaussian'),
                                Mosaic('RGGB'), Mosaic('BGGR', (1, 0)), Mosaic('GRBG'), Mosaic('GBRG'),
                                Mosaic('XTRANS', (2, 5)),
                                Compose(Blur(gaussian_kernel(1.0)), Downsample(2, 'bicubic')),
                                Compose(Blur(motion_kernel(5, 45), 'circular'), Mosaic('XTRANS')),
                                Compose(Compose(Blur(disk_kernel(2.0)), Downsample(2)), Downsample(3, 'bilinear'))],
                         ids=repr)
def test_every_linear_operator_is_exactly_adjoint(op):
    x = rand(2, 3, 24, 36, seed=10, normal=True)
    y = rand(*op(x).shape, seed=11, normal=True)
    assert inner_gap(op, x, y) < 1e-13
    assert adjoint_error(op, (2, 3, 24, 36)) < 1e-12


def test_downsample_definitions():
    x = rand(2, 3, 24, 36, seed=12)
    torch.testing.assert_close(Downsample(3)(x), F.avg_pool2d(x, 3))
    torch.testing.assert_close(Downsample(2, 'bilinear')(x),
                               F.interpolate(x, size=(12, 18), mode='bilinear', antialias=True))
    torch.testing.assert_close(Downsample(3, 'gaussian')(x), blur(x, gaussian_kernel(1.5))[..., 1::3, 1::3])
    assert Downsample(4, 'bicubic')(x).shape == (2, 3, 6, 9)
    assert Downsample(4, 'bicubic').adjoint(rand(2, 3, 6, 9)).shape == (2, 3, 24, 36)
    torch.testing.assert_close(Downsample(1)(x), x)
    c = torch.ones(1, 1, 8, 8, dtype=D64)
    torch.testing.assert_close(Downsample(2).adjoint(Downsample(2)(c)), c / 4)


def test_downsample_autograd_adjoint_is_differentiable():
    y = rand(1, 3, 6, 6, seed=13).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: Downsample(2, 'bicubic').adjoint(v), (y,))


def test_mosaic_patterns_and_phase():
    assert Mosaic('RGGB').pattern.tolist() == [[0, 1], [1, 2]]
    assert (Mosaic('RGGB', (0, 1)).pattern == Mosaic('GRBG').pattern).all()
    assert (Mosaic('RGGB', (1, 0)).pattern == Mosaic('GBRG').pattern).all()
    assert (Mosaic('RGGB', (1, 1)).pattern == Mosaic('BGGR').pattern).all()
    xt = Mosaic('XTRANS').pattern
    assert xt.shape == (6, 6) and [(xt == c).sum() for c in range(3)] == [8, 20, 8]
    assert xt[0].tolist() == [1, 1, 0, 1, 1, 2] and xt[5].tolist() == [0, 2, 1, 2, 0, 1]
    assert (Mosaic('XTRANS', (2, 3)).pattern == np.roll(xt, (-2, -3), (0, 1))).all()
    m = Mosaic('XTRANS').mask(7, 13)
    assert m.shape == (3, 7, 13) and m.dtype == torch.float32 and (m.sum(0) == 1).all()
    x = rand(1, 3, 7, 13, seed=14)
    y = Mosaic('XTRANS')(x)
    assert y.shape == (1, 1, 7, 13)
    idx = torch.from_numpy(np.tile(xt, (2, 3))[:7, :13])
    torch.testing.assert_close(y[0, 0], x[0].gather(0, idx[None])[0])
    torch.testing.assert_close(Mosaic('XTRANS').adjoint(y), x * m.double())


# ---------------------------------------------------------------- kernels
@pytest.mark.parametrize('length,angle', [(5, 0), (9, 45), (15, 90), (21, 135), (12.3, 30), (31, 170)])
def test_motion_kernel_properties(length, angle):
    k = motion_kernel(length, angle)
    s = k.shape[0]
    assert k.dtype == torch.float32 and k.shape == (s, s) and s % 2 == 1 and s >= length + 2 and s - 2 < length + 2
    assert abs(k.sum().item() - 1) < 1e-6 and (k >= 0).all()
    kd = k.double()
    yy, xx = torch.meshgrid(torch.arange(s, dtype=D64) - s // 2, torch.arange(s, dtype=D64) - s // 2, indexing='ij')
    assert abs((kd * xx).sum()) < 1e-6 and abs((kd * yy).sum()) < 1e-6       # centred
    a = math.radians(angle)
    along = xx * math.cos(a) - yy * math.sin(a)
    across = xx * math.sin(a) + yy * math.cos(a)
    var_along, var_across = (kd * along**2).sum().item(), (kd * across**2).sum().item()
    assert abs(var_along - length**2 / 12) < 0.05 * length**2 / 12 + 0.1
    assert var_across < 0.2                                                   # a thin line
    torch.testing.assert_close(k, k.flip(0, 1), atol=1e-6, rtol=0)            # point-symmetric segment


def test_motion_kernel_orientations_and_subpixel_length():
    torch.testing.assert_close(motion_kernel(11, 90), motion_kernel(11, 0).T, atol=1e-7, rtol=0)
    torch.testing.assert_close(motion_kernel(11, 135), motion_kernel(11, 45).flip(1), atol=1e-7, rtol=0)
    k0 = motion_kernel(11, 0)
    assert k0.shape == (13, 13) and (k0[5] == 0).all() and torch.count_nonzero(k0[6]) == 11   # horizontal: one row
    row = motion_kernel(5.4, 0)[4]
    torch.testing.assert_close(row[1:8], torch.tensor([0.2, 1, 1, 1, 1, 1, 0.2]) / 5.4, atol=1e-3, rtol=0)
    assert motion_kernel(5, 0, size=11).shape == (11, 11)
    assert not torch.equal(motion_kernel(10, 20), motion_kernel(10, 21))


def test_shake_kernel_properties_and_determinism():
    for seed in range(5):
        k = shake_kernel(31, seed=seed)
        assert k.shape == (31, 31) and k.dtype == torch.float32 and (k >= 0).all()
        assert abs(k.sum().item() - 1) < 1e-6
        c = torch.arange(31, dtype=D64) - 15
        assert abs((k.double().sum(1) * c).sum()) < 1e-5 and abs((k.double().sum(0) * c).sum()) < 1e-5
    assert torch.equal(shake_kernel(31, seed=3), shake_kernel(31, seed=3))
    assert torch.equal(shake_kernel(31, generator=torch.Generator().manual_seed(3)), shake_kernel(31, seed=3))
    assert not torch.equal(shake_kernel(31, seed=3), shake_kernel(31, seed=4))
    g = torch.Generator().manual_seed(0)
    a, b = shake_kernel(21, generator=g), shake_kernel(21, generator=g)
    assert not torch.equal(a, b)                                              # the generator advances
    long = shake_kernel(15, seed=0, length=200, exposure=1.0)                 # shrunk to fit, still centred
    assert long.shape == (15, 15) and abs(long.sum().item() - 1) < 1e-6


def test_gaussian_and_disk_kernels():
    for sigma, size in [(0.5, 5), (1.0, 7), (1.2, 9), (3.0, 19)]:
        g = gaussian_kernel(sigma)
        assert g.shape == (size, size) and abs(g.sum().item() - 1) < 1e-6
        torch.testing.assert_close(g, g.T)
        torch.testing.assert_close(g, g.flip(0))
    g = gaussian_kernel(1.5, size=31).double()
    c = torch.arange(31, dtype=D64) - 15
    assert abs((g.sum(0) * c**2).sum().item() - 2.25) < 1e-6
    for r in (1.0, 2.5, 4.0, 6.3):
        d = disk_kernel(r)
        assert d.shape[0] % 2 == 1 and abs(d.sum().item() - 1) < 1e-6
        torch.testing.assert_close(d, d.T)
        torch.testing.assert_close(d, d.flip(1))
        assert d.max().item() == pytest.approx(1 / (math.pi * r * r), rel=0.02)   # interior = 1 / area
        assert (d[d.shape[0] // 2, 0] > 0)                                         # the edge pixel is partly covered
    assert disk_kernel(4.0).shape == (9, 9) and disk_kernel(4.0, size=15).shape == (15, 15)
    # area coverage makes the kernel change continuously with the radius
    assert (disk_kernel(3.0, 9) - disk_kernel(3.01, 9)).abs().max() < 1e-3


def test_kernel_sampler():
    s = KernelSampler(seed=0)
    ks = s(40)
    assert ks.shape == (40, 31, 31) and ks.dtype == torch.float32 and (ks >= 0).all()
    torch.testing.assert_close(ks.sum((1, 2)), torch.ones(40), atol=1e-5, rtol=0)
    c = torch.arange(31, dtype=D64) - 15
    torch.testing.assert_close((ks.double().sum(2) * c).sum(1), torch.zeros(40, dtype=D64), atol=1e-4, rtol=0)
    assert {p['kind'] for p in s.last_params} == {'motion', 'shake', 'gaussian', 'disk'}
    assert torch.equal(KernelSampler(seed=0)(40), ks)
    assert not torch.equal(s(40), ks)                                          # the stream advances
    m = KernelSampler(size=21, kinds=('motion',), length=(5, 15), angle=(0, 90), exclude=(40, 50), seed=1)
    assert m(300).shape == (300, 21, 21)
    angles = np.array([p['angle'] for p in m.last_params])
    assert ((angles < 40) | (angles > 50)).all() and angles.min() >= 0 and angles.max() <= 90
    assert (angles < 40).any() and (angles > 50).any()
    only_disk = KernelSampler(kinds=('motion', 'disk'), probs=(0, 1), seed=2)
    only_disk(10)
    assert all(p['kind'] == 'disk' for p in only_disk.last_params)


# ---------------------------------------------------------------- noise
def test_gaussian_noise_statistics_and_determinism():
    x = torch.full((4, 3, 128, 128), 0.5)
    n = GaussianNoise(0.1)
    y = n(x, seed=0)
    assert y.dtype == torch.float32
    assert abs((y - x).std().item() - 0.1) < 1e-3 and abs((y - x).mean().item()) < 1e-3
    assert torch.equal(y, n(x, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(y, n(x, seed=1))
    r = GaussianNoise((0.01, 0.2))
    y = r(x, seed=5)
    sig = r.last_params['sigma']
    assert sig.shape == (4,) and ((sig >= 0.01) & (sig <= 0.2)).all()
    torch.testing.assert_close((y - x).std((1, 2, 3)), sig, atol=3e-3, rtol=0.02)
    assert GaussianNoise(0.5)(x, seed=0).max() > 1                              # unclipped by default
    yc = GaussianNoise(0.5, clip=True)(x, seed=0)
    assert yc.min() >= 0 and yc.max() <= 1
    torch.testing.assert_close(GaussianNoise(0.0)(x, seed=0), x)


def test_poisson_gaussian_variance_law():
    a, b = 0.02, 0.03
    levels = torch.tensor([0.0, 0.1, 0.3, 0.6, 0.9])
    x = levels.view(1, 5, 1, 1).expand(2, 5, 300, 300).contiguous()
    y = PoissonGaussianNoise(a, b)(x, seed=0)
    var, mean = y.var((0, 2, 3)), y.mean((0, 2, 3))
    torch.testing.assert_close(var, a * levels + b * b, rtol=0.03, atol=0)
    torch.testing.assert_close(mean, levels, atol=2e-3, rtol=0)
    assert torch.equal(y, PoissonGaussianNoise(a, b)(x, seed=0))
    # shot noise only: values on the lattice a·N
    z = PoissonGaussianNoise(0.1, 0.0)(torch.full((1, 1, 64, 64), 0.5), seed=1)
    torch.testing.assert_close(z / 0.1, (z / 0.1).round())
    # a = 0 disables shot noise
    torch.testing.assert_close(PoissonGaussianNoise(0.0, 0.0)(x, seed=0), x)
    r = PoissonGaussianNoise((0.001, 0.01), (0.0, 0.02))
    r(x, seed=2)
    assert ((r.last_params['a'] >= 0.001) & (r.last_params['a'] <= 0.01)).all()


def test_jpeg_error_decreases_with_quality_and_is_deterministic():
    from restore_nb.core import sample_images
    x = torch.stack(list(sample_images(['chelsea', 'brick'], size=96, mode='rgb').values()))
    errs = [(JPEG(q)(x) - x).pow(2).mean().item() for q in (5, 25, 50, 75, 95)]
    assert all(e1 > e2 for e1, e2 in zip(errs, errs[1:])), errs
    y = JPEG((10, 90))(x, seed=0)
    assert y.shape == x.shape and y.dtype == torch.float32 and y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, JPEG((10, 90))(x, seed=0))
    j = JPEG((30, 32))
    j(x.repeat(8, 1, 1, 1), seed=3)
    assert set(j.last_params['quality'].tolist()) <= {30, 31, 32}
    assert JPEG(50)(x[:, :1]).shape == (2, 1, 96, 96)


def test_compose_forward_adjoint_and_noise():
    k = motion_kernel(7, 30)
    ops = [Blur(k), Downsample(2, 'bicubic'), GaussianNoise(0.05)]
    c = Compose(*ops)
    x = rand(2, 3, 32, 32, dtype=torch.float32)
    torch.testing.assert_close(c(x, generator=torch.Generator().manual_seed(0)),
                               ops[2](ops[1](ops[0](x)), generator=torch.Generator().manual_seed(0)))
    assert torch.equal(c(x, generator=torch.Generator().manual_seed(0)),
                       c(x, generator=torch.Generator().manual_seed(0)))
    lin = Compose(*ops[:2])
    y = rand(2, 3, 16, 16, dtype=torch.float32)
    torch.testing.assert_close(lin.adjoint(y), ops[0].adjoint(ops[1].adjoint(y)))
    torch.testing.assert_close(lin.normal(x), lin.adjoint(lin(x)))
    assert lin.is_linear and not c.is_linear
    with pytest.raises(ValueError, match=r'op 2 \(GaussianNoise\) is not a LinearOperator'):
        c.adjoint(y)
    with pytest.raises(ValueError, match=r'op 0 \(JPEG\)'):
        Compose(JPEG(50), Blur(k)).adjoint(y)


# ---------------------------------------------------------------- precision and devices
def test_autocast_and_half_inputs_compute_in_float32():
    x = rand(2, 3, 32, 32, dtype=torch.float32)
    A = Blur(gaussian_kernel(1.5))
    ref, refa = A(x), A.adjoint(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y, ya = A(x), A.adjoint(x)
        d = Downsample(2, 'gaussian')(x)
    assert y.dtype == ya.dtype == d.dtype == torch.float32
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(ya, refa)
    y16 = A(x.half())
    assert y16.dtype == torch.float32
    torch.testing.assert_close(y16, A(x.half().float()))
    assert A(x.double()).dtype == D64


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    x = rand(2, 3, 40, 48, dtype=torch.float32)
    for boundary in ('reflect', 'circular'):
        A = Blur(KernelSampler(seed=0)(2), boundary)
        Ac = Blur(A.kernel, boundary).cuda()
        torch.testing.assert_close(Ac(x.cuda()).cpu(), A(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(Ac.adjoint(x.cuda()).cpu(), A.adjoint(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(Ac.kernel_adjoint(x.cuda(), x.cuda()).cpu(), A.kernel_adjoint(x, x), atol=1e-3,
                                   rtol=1e-4)
        with torch.autocast('cuda', dtype=torch.float16):
            assert Ac(x.cuda()).dtype == torch.float32
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(GaussianNoise(0.1)(x.cuda(), generator=g).cpu(),
                               GaussianNoise(0.1)(x, generator=torch.Generator().manual_seed(0)))
    assert Mosaic('XTRANS')(x.cuda()).device.type == 'cuda'
    assert Downsample(2, 'bicubic').adjoint(x.cuda()).device.type == 'cuda'


# ---------------------------------------------------------------- bad input
NAN = torch.full((1, 3, 8, 8), float('nan'))
BAD = [
    (lambda: Blur(torch.ones(0, 3)), 'empty'),
    (lambda: Blur(torch.ones(4, 3)), 'odd height and width'),
    (lambda: Blur(-torch.ones(3, 3)), 'negative'),
    (lambda: Blur(torch.tensor([[0, 0, 0], [0, float('inf'), 0], [0, 0, 0]])), 'NaN or Inf'),
    (lambda: Blur(torch.zeros(3, 3)), 'sums to zero'),
    (lambda: Blur(torch.stack([torch.ones(3, 3), torch.zeros(3, 3)])), 'sums to zero'),
    (lambda: Blur(torch.ones(2, 3, 3, 3)), 'must have shape'),
    (lambda: Blur(torch.ones(3, 3), 'zero'), 'boundary must be one of'),
    (lambda: Blur(torch.ones(9, 9))(torch.rand(1, 3, 8, 16)), 'larger than the image'),
    (lambda: blur(torch.rand(1, 3, 16, 8), torch.ones(3, 9)), 'larger than the image'),
    (lambda: Blur(torch.ones(3, 5, 5))(torch.rand(2, 3, 16, 16)), 'kernel batch (3) does not match the image batch '
                                                                  '(2)'),
    (lambda: blur_adjoint(torch.rand(2, 3, 16, 16), torch.ones(3, 5, 5)), 'kernel batch (3)'),
    (lambda: Blur(torch.ones(3, 3))(NAN), 'x contains NaN or Inf'),
    (lambda: Blur(torch.ones(3, 3)).adjoint(NAN), 'y contains NaN or Inf'),
    (lambda: Blur(torch.ones(3, 3))(torch.rand(3, 8, 8)), 'shape (B,C,H,W)'),
    (lambda: Blur(torch.ones(3, 3))(torch.ones(1, 1, 8, 8, dtype=torch.int64)), 'floating-point'),
    (lambda: Blur(torch.ones(3, 3)).kernel_adjoint(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9)), 'r must have the '
                                                                                                    'shape of x'),
    (lambda: Blur(torch.ones(3, 3)).kernel_adjoint(torch.rand(1, 3, 8, 8), NAN), 'r contains NaN'),
    (lambda: check_kernel('abc'), 'kernel must be a tensor or array of numbers'),
    (lambda: check_kernel(torch.ones(4, 4), name='psf'), 'psf must have odd'),
    (lambda: motion_kernel(-1, 0), 'length must be >= 0'),
    (lambda: motion_kernel(float('nan'), 0), 'length must be finite'),
    (lambda: motion_kernel(20, 0, size=15), 'too small'),
    (lambda: motion_kernel(5, 0, size=8), 'size must be a positive odd integer'),
    (lambda: gaussian_kernel(0), 'sigma must be > 0'),
    (lambda: gaussian_kernel(1, size=4), 'size must be a positive odd integer'),
    (lambda: disk_kernel(-2), 'radius must be > 0'),
    (lambda: disk_kernel(4, size=5), 'too small'),
    (lambda: shake_kernel(30), 'size must be a positive odd integer'),
    (lambda: shake_kernel(31, seed=0, exposure=1.5), 'exposure must be in (0, 1]'),
    (lambda: KernelSampler(kinds=('box',)), "unknown kernel family 'box'"),
    (lambda: KernelSampler(probs=(1, 1)), 'probs must be 4 non-negative numbers'),
    (lambda: KernelSampler(length=(5, 40)), 'does not fit in size 31'),
    (lambda: KernelSampler(radius=(1, 20)), 'does not fit in size 31'),
    (lambda: KernelSampler(sigma=(3, 1)), 'lo <= hi'),
    (lambda: KernelSampler(exclude=(0, 180)), 'removes the whole angle range'),
    (lambda: KernelSampler(seed=0)(0), 'n must be a positive integer'),
    (lambda: Downsample(0), 'factor must be a positive integer'),
    (lambda: Downsample(2, 'lanczos'), 'method must be one of'),
    (lambda: Downsample(4)(torch.rand(1, 3, 30, 32)), 'multiples of factor=4'),
    (lambda: Downsample(2, 'bicubic')(NAN), 'x contains NaN or Inf'),
    (lambda: Mosaic('RGBW'), 'pattern must be one of'),
    (lambda: Mosaic('RGGB', phase=1), 'phase must be a pair of integers'),
    (lambda: Mosaic()(torch.rand(1, 1, 4, 4)), '3 (RGB) channels'),
    (lambda: Mosaic().adjoint(torch.rand(1, 3, 4, 4)), 'y must have 1 channel'),
    (lambda: GaussianNoise(-0.1), 'sigma must be >= 0'),
    (lambda: GaussianNoise((0.2, 0.1)), 'lo <= hi'),
    (lambda: GaussianNoise(0.1)(NAN), 'x contains NaN or Inf'),
    (lambda: PoissonGaussianNoise(-1, 0), 'a must be >= 0'),
    (lambda: PoissonGaussianNoise(0.01, float('inf')), 'b must be finite'),
    (lambda: JPEG(0), 'quality must be an integer in 1..100'),
    (lambda: JPEG(50.5), 'quality must be an integer'),
    (lambda: JPEG((90, 10)), 'lo <= hi'),
    (lambda: JPEG(50)(torch.rand(1, 2, 8, 8)), '1 or 3 channels'),
    (lambda: Compose(), 'at least one operator'),
    (lambda: Compose(lambda x: x), 'must be an nn.Module'),
]


@pytest.mark.parametrize('call,msg', BAD, ids=[m for _, m in BAD])
def test_bad_input_raises_value_error(call, msg):
    with pytest.raises(ValueError) as e:
        call()
    assert msg in str(e.value), str(e.value)
