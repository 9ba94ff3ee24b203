"""restore_nb.data: sources, deterministic splits and pairs, kernel files (incl. MATLAB v7.3)."""
import numpy as np
import pytest
import torch
from restore_nb.core import save_image
from restore_nb.physics import Blur, motion_kernel, gaussian_kernel
from restore_nb.data import ImageSource, DeblurPairs, kernel_sampler, load_kernels, deblur_dataloaders


@pytest.fixture
def folder(tmp_path):
    for i, sub in enumerate(['a', 'a/b', 'c']):
        save_image(torch.rand(3, 40, 50), tmp_path / sub / f'img{i}.png')
    (tmp_path / 'notes.txt').write_text('not an image')
    return tmp_path


def test_folder_source_recursive_and_lazy(folder):
    s = ImageSource(folder)
    assert s.names == ['a/b/img1', 'a/img0', 'c/img2'] and s._cache == {}
    assert s[0].shape == (3, 40, 50) and len(s._cache) == 1


def test_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='data folder not found'): ImageSource(tmp_path / 'nope')
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
    a.set_epoch(3); b.set_epoch(3)
    assert torch.equal(a[1][0], b[1][0])
    b.set_epoch(4)
    assert not torch.equal(a[1][0], b[1][0])


def test_pairs_reject_crops_smaller_than_kernels(folder):
    with pytest.raises(ValueError, match='smaller than'): DeblurPairs(ImageSource(folder), size=16, kernels=kernel_sampler(31))


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
    torch.testing.assert_close(ks[0] if ks[0].shape == k1.shape else ks[1], torch.from_numpy(k1).float(), rtol=0, atol=1e-6)


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
