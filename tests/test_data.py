"""restore_nb.data: sources, deterministic splits and pairs, kernel files (incl. MATLAB v7.3)."""
import numpy as np
import pytest
import torch
from restore_nb.core import save_image
from restore_nb.physics import Blur, motion_kernel, gaussian_kernel
from restore_nb.data import ImageSource
from restore_nb.physics import kernel_sampler, load_kernels
from restore_nb.tasks.deblur import DeblurPairs, deblur_dataloaders


@pytest.fixture
def folder(tmp_path):
    for i, sub in enumerate(['a', 'a/b', 'c']):
        save_image(torch.rand(3, 40, 50), tmp_path / sub / f'img{i}.png')
    (tmp_path / 'notes.txt').write_text('not an image')
    return tmp_path


def test_folder_source_recursive_and_lazy(folder):
    s = ImageSource(folder)
    assert s.names == ['a/b/img1', 'a/img0', 'c/img2'] and len(s._cache) == 0
    assert s[0].shape == (3, 40, 50) and len(s._cache) == 1


def test_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='data not found'): ImageSource(tmp_path / 'nope')
    with pytest.raises(ValueError, match='no images'): ImageSource(tmp_path)


def test_split_is_deterministic_disjoint_and_stable_under_additions(folder):
    tr, va = ImageSource(folder).split(0.5)
    assert not set(tr.names) & set(va.names) and len(tr) + len(va) == 3
    save_image(torch.rand(3, 40, 50), folder / 'z' / 'new.png')
    tr2, va2 = ImageSource(folder).split(0.5)
    assert set(va.names) <= set(va2.names) | {'__'} and set(tr.names) <= set(tr2.names)


def test_pairs_are_the_physics_model_and_reproducible(folder):
    src = ImageSource(folder)
    ds = DeblurPairs(src, n=6, size=32, kernels=kernel_sampler(9, seed=0), noise=(0.0, 0.0), seed=3, train=False)
    y, k, x = ds[2]
    torch.testing.assert_close(y, Blur(k)(x[None])[0])      # noise-free: exactly the operator
    again = DeblurPairs(src, n=6, size=32, kernels=kernel_sampler(9, seed=0), noise=(0.0, 0.0), seed=3, train=False)[2]
    assert all(torch.equal(a, b) for a, b in zip(ds[2], again))
    dn = DeblurPairs(src, n=6, size=32, kernels=kernel_sampler(9, seed=0), noise=0.05, seed=3, train=True)
    y, k, x = dn[0]
    assert abs(float((y - Blur(k)(x[None])[0]).std()) - 0.05) < 0.01


def test_training_pairs_change_with_epoch_and_resume_identically(folder):
    mk = lambda: DeblurPairs(ImageSource(folder), n=4, size=32, kernels=kernel_sampler(9), seed=1, train=True)
    a, b = mk(), mk()
    a.set_epoch(3)
    b.set_epoch(3)
    assert torch.equal(a[1][0], b[1][0])
    b.set_epoch(4)
    assert not torch.equal(a[1][0], b[1][0])


def test_pairs_reject_crops_smaller_than_kernels(folder):
    with pytest.raises(ValueError, match='smaller than'):
        DeblurPairs(ImageSource(folder), size=16, kernels=kernel_sampler(31))


def test_load_kernels_formats(tmp_path):
    from scipy.io import savemat
    k1, k2 = motion_kernel(9, 45.0).numpy(), gaussian_kernel(1.5).numpy()
    np.save(tmp_path / 'stack.npy', np.stack([k1, k1]))
    assert len(load_kernels(tmp_path / 'stack.npy')) == 2
    savemat(tmp_path / 'vars.mat', {'f1': k1, 'f2': k2 * 3})
    ks = load_kernels(tmp_path / 'vars.mat')
    assert len(ks) == 2 and all(abs(float(k.sum()) - 1) < 1e-6 for k in ks)
    even = np.ones((4, 6)) / 24
    np.save(tmp_path / 'even.npy', even)
    k, = load_kernels(tmp_path / 'even.npy')
    assert k.shape == (5, 7)


def test_load_kernels_matlab_v73(tmp_path):
    "MATLAB v7.3 files are HDF5 with a 512-byte header; scipy cannot read them, h5py can."
    import h5py
    k1 = motion_kernel(11, 30.0).numpy().astype(np.float64)
    p = tmp_path / 'levin.mat'
    with h5py.File(p, 'w', userblock_size=512) as f:
        f.create_dataset('kernel', data=k1.T)          # MATLAB stores column-major
        refs = f.create_group('#refs#')
        a = refs.create_dataset('a', data=gaussian_kernel(1.0).numpy().astype(np.float64).T)
        f.create_dataset('kernels', data=np.array([[a.ref]], dtype=h5py.ref_dtype))
    hdr = b'MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .'
    with open(p, 'r+b') as f: f.write(hdr.ljust(116) + b'\0' * 8 + b'\x00\x02IM')
    ks = load_kernels(p)
    assert len(ks) == 2
    torch.testing.assert_close(ks[0] if ks[0].shape == k1.shape else ks[1], torch.from_numpy(k1).float(), rtol=0,
                               atol=1e-6)


def test_load_kernels_errors(tmp_path):
    with pytest.raises(FileNotFoundError): load_kernels(tmp_path / 'x.npy')
    (tmp_path / 'k.csv').write_text('1')
    with pytest.raises(ValueError, match='expected .npy, .npz or .mat'): load_kernels(tmp_path / 'k.csv')
    np.save(tmp_path / 'nan.npy', np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match='nan.npy'): load_kernels(tmp_path / 'nan.npy')


def test_dataloaders_batches():
    dls = deblur_dataloaders(size=32, bs=4, n_train=8, n_valid=4, kernel_size=9, device='cpu')
    y, k, x = dls.one_batch()
    assert y.shape == x.shape == (4, 3, 32, 32) and k.shape == (4, 9, 9) and dls.n_inp == 2


def test_zip_source_matches_folder_and_bounded_cache(folder, tmp_path):
    import zipfile
    z = tmp_path / 'imgs.zip'
    with zipfile.ZipFile(z, 'w') as f:
        for p in sorted(folder.rglob('*.png')): f.write(p, p.relative_to(folder))
        f.writestr('__MACOSX/._junk.png', b'xx')
        f.writestr('broken.png', b'not a png')
    s, fs = ImageSource(z, cache=1), ImageSource(folder)
    assert s.names == ['a/b/img1', 'a/img0', 'broken', 'c/img2']
    assert torch.equal(s[0], fs[0]) and torch.equal(s[3], fs[2])
    assert len(s._cache) == 1                                          # LRU bound
    with pytest.raises(ValueError, match=r'imgs.zip:broken.png'): s[2]   # the error names the archive member
    (tmp_path / 'bad.zip').write_bytes(b'PK\x03\x04garbage')
    with pytest.raises(ValueError, match='not a readable zip'): ImageSource(tmp_path / 'bad.zip')


def test_registered_source_and_unknown_scheme():
    from restore_nb.data import register_source, SOURCES
    register_source('unittest', lambda spec,
                    mode: [(f'{spec}-{i}', lambda i=i: torch.full((3, 8, 8), i / 2)) for i in range(2)])
    try:
        s = ImageSource('unittest:x')
        assert s.names == ['x-0', 'x-1'] and s[1].mean() == 0.5
    finally: SOURCES.pop('unittest')
    with pytest.raises(ValueError, match='unknown '
                                         'source'):  # kaggle: is registered once restore_nb.streaming is imported
        ImageSource('nosuchscheme:x/y')
    with pytest.raises(ValueError, match='scheme'): register_source('k', lambda s, m: [])


@pytest.mark.parametrize('name', ['RGGB', 'GBRG', 'XTRANS'])
def test_cfa_safe_crops_preserve_the_phase(name):
    "On the channel-index image of a mosaic, every augmented crop is the tiled pattern again (phase kept)."
    from restore_nb.physics import Mosaic
    from restore_nb.data import random_crop, cfa_transforms
    pat = Mosaic(name).pattern
    P = pat.shape[0]
    idx_img = torch.as_tensor(pat).repeat(20, 20)[None].float()
    for s in range(30):
        c = random_crop(idx_img, 4 * P, torch.Generator().manual_seed(s), cfa=pat)
        assert torch.equal(c[0], torch.as_tensor(pat).repeat(4, 4).float())
    mosaic = Mosaic(name)(torch.rand(1, 3, 20 * P, 20 * P))[0]
    crops = {
        tuple(random_crop(mosaic, 4 * P, torch.Generator().manual_seed(s), cfa=pat)[0, 0, :4].tolist())
        for s in range(20)
    }
    assert len(crops) > 10                                              # positions and transforms really vary
    assert cfa_transforms(pat)[0] == (0, 0)
    with pytest.raises(ValueError, match='multiple of the CFA period'):
        random_crop(mosaic, 4 * P + 1, torch.Generator(), cfa=pat)


def test_degraded_pairs_with_a_pipeline(folder):
    from restore_nb.data import DegradedPairs, pairs_dataloaders
    from restore_nb.physics import Compose, Downsample, GaussianNoise
    op = Compose(Blur(gaussian_kernel(1.0)), Downsample(2), GaussianNoise(0.01))
    ds = DegradedPairs(ImageSource(folder), op, n=4, size=32, seed=3)
    y, x = ds[0]
    assert y.shape == (3, 16, 16) and x.shape == (3, 32, 32)
    assert torch.equal(ds[2][0], ds[2][0])
    clean = Compose(Blur(gaussian_kernel(1.0)), Downsample(2))(x[None])[0]
    assert 0.003 < (y - clean).std() < 0.02                             # the noise is there, at σ≈0.01
    dls = pairs_dataloaders(folder, op, size=32, bs=2, n_train=4, n_valid=2, device='cpu', valid_frac=0.5)
    yb, xb = dls.one_batch()
    assert yb.shape == (2, 3, 16, 16) and xb.shape == (2, 3, 32, 32)


def test_sources_pickle_for_spawned_workers(folder, tmp_path):
    "DataLoader workers started with 'spawn' (macOS, Windows) receive the dataset by pickle."
    import pickle, zipfile
    z = tmp_path / 'i.zip'
    with zipfile.ZipFile(z, 'w') as f: f.write(folder / 'c' / 'img2.png', 'img2.png')
    for src in (ImageSource(folder), ImageSource(z), ImageSource('builtin')):
        s2 = pickle.loads(pickle.dumps(src))
        assert s2.names == src.names and torch.equal(s2[0], src[0])
