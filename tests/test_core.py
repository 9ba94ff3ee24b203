"""restore_nb.core beyond the notebook's demonstrations: file formats, broken files, crash safety, paths."""
import json, signal, sys
import numpy as np
import pytest
import torch
from PIL import Image
from restore_nb.core import (load_image, save_image, atomic_write, write_json, ImageReadError, sample_images,
                             resize_crop, set_seed, default_device, persist_dir, to_tensor, SAMPLE_NAMES)
from conftest import run


def test_png16_colour_keeps_full_precision(tmp_path):
    "Pillow truncates 16-bit colour PNGs to 8 bits; load_image must not."
    a = (np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 1021 + 7)
    import png
    with open(tmp_path / 'c16.png', 'wb') as f:
        png.Writer(5, 4, greyscale=False, bitdepth=16).write(f, a.reshape(4, 15))
    x = load_image(tmp_path / 'c16.png')
    assert x.shape == (3, 4, 5)
    np.testing.assert_array_equal(np.round(x.permute(1, 2, 0).numpy() * 65535).astype(np.uint16), a)


def test_png16_grey_from_pillow(tmp_path):
    a = np.array([[0, 1, 257, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / 'g.png')
    np.testing.assert_array_equal(np.round(load_image(tmp_path / 'g.png')[0].numpy() * 65535), a)


def test_alpha_and_palette_are_dropped_to_rgb(tmp_path):
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 10
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'a.png')
    x = load_image(tmp_path / 'a.png')
    assert x.shape == (3, 3, 4) and abs(x[0].mean().item() - 200 / 255) < 1e-6
    Image.fromarray(rgba[..., :3]).convert('P').save(tmp_path / 'p.png')
    assert load_image(tmp_path / 'p.png').shape == (3, 3, 4)


def test_planar_tiff_and_float_tiff(tmp_path):
    import tifffile
    a = np.random.default_rng(0).integers(0, 65535, (3, 6, 7), dtype=np.uint16)
    tifffile.imwrite(tmp_path / 'planar.tif', a, photometric='rgb', planarconfig='separate')
    np.testing.assert_allclose(load_image(tmp_path / 'planar.tif').numpy(), a / 65535.0, atol=1e-7)
    f = np.full((5, 5), 2.5, np.float32)
    tifffile.imwrite(tmp_path / 'f.tif', f)
    assert load_image(tmp_path / 'f.tif').max().item() == 2.5     # linear highlight survives


def test_gray_conversion_matches_pillow(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / 'rgb.png')
    ours = load_image(tmp_path / 'rgb.png', mode='gray')[0].numpy()
    pil = np.asarray(Image.fromarray(rgb).convert('L')) / 255.0
    assert np.abs(ours - pil).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize('ext', ['.jpg', '.png', '.tif'])
def test_truncated_files_name_the_file(tmp_path, ext):
    x = torch.rand(3, 64, 64)
    p = save_image(x, tmp_path / f'img{ext}')
    data = p.read_bytes()
    bad = tmp_path / f'cut{ext}'
    bad.write_bytes(data[:len(data) // 3])
    with pytest.raises(ImageReadError, match=f'cut{ext}'): load_image(bad)


def test_missing_directory_and_bad_mode(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.png'): load_image(tmp_path / 'nope.png')
    with pytest.raises(IsADirectoryError, match='directory'): load_image(tmp_path)
    with pytest.raises(ValueError, match="mode must be"): load_image(tmp_path / 'x.png', mode='cmyk')


def test_save_image_rejects_bad_requests(tmp_path):
    x = torch.rand(3, 4, 4)
    with pytest.raises(ValueError, match='16-bit output needs'): save_image(x, tmp_path / 'a.jpg', bits=16)
    with pytest.raises(ValueError, match='float'): save_image(x, tmp_path / 'a.png', bits=32)
    with pytest.raises(ValueError, match='1 or 3 channels'): save_image(torch.rand(2, 4, 4), tmp_path / 'a.png')
    assert not list(tmp_path.iterdir())


KILLER = """
import os, signal, sys
from restore_nb.core import atomic_write
with atomic_write(sys.argv[1], 'w') as f:
    f.write('{"epoch": 2, "weights": "'); f.flush(); os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_atomic_write_survives_sigkill(tmp_path):
    "A process killed mid-write (no cleanup code runs) leaves the previous file intact."
    target = tmp_path / 'ckpt.json'
    write_json({'epoch': 1}, target)
    r = run([sys.executable, '-c', KILLER, target])
    assert r.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {'epoch': 1}


def test_atomic_write_failure_keeps_old_and_cleans_up(tmp_path):
    target = tmp_path / 'w.bin'
    target.write_bytes(b'old')
    with pytest.raises(ZeroDivisionError):
        with atomic_write(target) as f:
            f.write(b'new')
            1 / 0
    assert target.read_bytes() == b'old' and [p.name for p in tmp_path.iterdir()] == ['w.bin']


def test_write_json_types(tmp_path):
    p = write_json({'a': np.float32(1.5), 'b': torch.tensor(2.0), 'c': np.arange(3), 'd': tmp_path},
                   tmp_path / 'x.json')
    assert json.loads(p.read_text()) == {'a': 1.5, 'b': 2.0, 'c': [0, 1, 2], 'd': str(tmp_path)}
    with pytest.raises(TypeError, match='not JSON serialisable'): write_json({'x': object()}, tmp_path / 'y.json')
    assert not (tmp_path / 'y.json').exists()


def test_sample_images_are_real_photographs():
    imgs = sample_images()
    assert list(imgs) == list(SAMPLE_NAMES)
    for n, x in imgs.items():
        assert x.dtype == torch.float32 and x.shape[0] in (1, 3) and min(x.shape[1:]) >= 150, n
        assert x.std() > 0.05, f'{n} looks blank'
    a, b = sample_images('coffee')['coffee'], sample_images('coffee')['coffee']
    assert torch.equal(a, b)
    a[:] = 0   # callers may modify what they get without corrupting the cache
    assert sample_images('coffee')['coffee'].std() > 0.05


def test_resize_crop_shapes():
    x = torch.rand(3, 40, 100)
    assert resize_crop(x, 32).shape == (3, 32, 32)
    assert resize_crop(x[None].expand(2, -1, -1, -1), 16).shape == (2, 3, 16, 16)
    assert torch.equal(resize_crop(x[:, :, 30:70], 40), x[:, :, 30:70])   # already the right size: exact crop


def test_set_seed_reproduces_torch_numpy_python():
    import random
    draws = []
    for _ in range(2):
        set_seed(123)
        draws.append((random.random(), np.random.rand(), torch.randn(4).tolist(), torch.randint(0, 100, (3,)).tolist()))
    assert draws[0] == draws[1]


def test_default_device_env_override(monkeypatch):
    monkeypatch.setenv('RESTORE_NB_DEVICE', 'cpu')
    assert default_device() == torch.device('cpu')


def test_persist_dir_priority(tmp_path, monkeypatch):
    drive = tmp_path / 'drive'
    (drive / 'MyDrive').mkdir(parents=True)
    monkeypatch.setenv('RESTORE_NB_DRIVE_MOUNT', str(drive))       # where the (simulated) Colab mounts Drive
    monkeypatch.setenv('COLAB_RELEASE_TAG', 'test')           # pretend to be in Colab with Drive mounted
    monkeypatch.delenv('RESTORE_NB_HOME', raising=False)
    assert persist_dir('ckpt') == drive / 'MyDrive' / 'restore_nb' / 'ckpt'
    monkeypatch.setenv('RESTORE_NB_HOME', str(tmp_path / 'home'))   # an explicit choice wins
    assert persist_dir('ckpt') == tmp_path / 'home' / 'ckpt' and (tmp_path / 'home' / 'ckpt').is_dir()
    monkeypatch.delenv('RESTORE_NB_HOME')
    monkeypatch.delenv('COLAB_RELEASE_TAG')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    assert persist_dir(create=False) == tmp_path / 'cache' / 'restore_nb'


def test_to_tensor_layout_and_errors():
    assert to_tensor(np.zeros((2, 3, 3), np.uint8)).shape == (3, 2, 3)
    with pytest.raises(ValueError, match='expected an'): to_tensor(np.zeros((1, 2, 3, 4), np.float32))
