"""restore_nb.raw: real DNG files read back by rawpy/LibRaw; teachers; torture patterns; grid-artifact score."""
import numpy as np
import pytest
import torch
from restore_nb.physics import Mosaic
from restore_nb.data.raw import (
    load_raw,
    write_dng,
    raw_to_rgb,
    mosaic_with,
    RawPairs,
    torture_patterns,
    grid_score,
    TORTURE_FAMILIES,
)


@pytest.mark.parametrize('name,phase',
                         [('RGGB', (0, 0)), ('RGGB', (1, 0)), ('RGGB', (1, 1)), ('BGGR', (0, 1)), ('XTRANS', (2, 3))])
def test_dng_round_trip_reads_pattern_and_phase_from_the_file(tmp_path, name, phase):
    m = Mosaic(name, phase=phase)
    size = 516 if name == 'XTRANS' else 48
    x = m(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)))[0]
    write_dng(tmp_path / 'a.dng', x, m.pattern, black=512, white=4095)
    r = load_raw(tmp_path / 'a.dng')
    assert np.array_equal(r.pattern, m.pattern) and r.black == [512.0] * 4 and r.white == 4095
    assert (r.cfa - x).abs().max() <= 0.5 / (4095 - 512) + 1e-6          # 12-bit quantisation only
    assert r.kind == ('xtrans' if name == 'XTRANS' else 'bayer')


def test_values_above_white_are_kept_and_black_is_subtracted(tmp_path):
    raw = np.full((32, 32), 1000, np.uint16)
    raw[0, 0] = 4095
    raw[1, 1] = 100  # LibRaw rejects tiny files
    write_dng(tmp_path / 'b.dng', raw, Mosaic('RGGB').pattern, black=100, white=3000)
    r = load_raw(tmp_path / 'b.dng')
    assert r.cfa[0, 0, 0] > 1.0 and r.cfa[0, 1, 1] == 0.0
    assert abs(float(r.cfa[0, 2, 2]) - 900 / 2900) < 1e-6


def test_corrupt_and_unsupported_files(tmp_path):
    (tmp_path / 'x.dng').write_bytes(b'II*\x00' + bytes(64))
    with pytest.raises(ValueError, match='unsupported or corrupt'): load_raw(tmp_path / 'x.dng')
    (tmp_path / 'y.raf').write_bytes(b'')
    with pytest.raises(ValueError, match=r'y\.raf'): raw_to_rgb(tmp_path / 'y.raf')
    with pytest.raises(FileNotFoundError): load_raw(tmp_path / 'none.dng')
    with pytest.raises(ValueError, match='pattern'):
        write_dng(tmp_path / 'z.dng', torch.rand(8, 8), [[0, 1, 2], [1, 2, 0], [2, 0, 1]])
    # LibRaw's X-Trans code fails under 512 px
    write_dng(tmp_path / 'small.dng', torch.rand(120, 120), Mosaic('XTRANS').pattern)
    with pytest.raises(ValueError, match=r'small\.dng.*at least 512x512'): raw_to_rgb(tmp_path / 'small.dng')


def test_teachers_keep_the_measured_samples(tmp_path):
    m = Mosaic('GBRG')
    clean = torch.rand(1, 3, 8, 8).repeat_interleave(8, -1).repeat_interleave(8, -2)      # smooth-ish blocks
    write_dng(tmp_path / 'c.dng', m(clean)[0], m.pattern)
    r = load_raw(tmp_path / 'c.dng')
    for alg in ('AHD', 'DHT', 'AAHD'):
        rgb = raw_to_rgb(tmp_path / 'c.dng', alg)
        assert rgb.shape == (3, 64, 64) and (mosaic_with(rgb, r.pattern) - r.cfa).abs().max() < 2e-3
    with pytest.raises(ValueError, match='algorithm'): raw_to_rgb(tmp_path / 'c.dng', 'magic')


def test_raw_pairs_crop_on_the_period(tmp_path):
    m = Mosaic('RGGB', phase=(1, 0))
    for i in range(2): write_dng(tmp_path / f'{i}.dng', m(torch.rand(1, 3, 64, 64))[0], m.pattern)
    ds = RawPairs(tmp_path, size=32, n=6, seed=1)
    for k in range(6):
        mo, te = ds[k]
        assert (mosaic_with(te, m.pattern) - mo).abs().max() < 2e-3
    with pytest.raises(ValueError, match='multiple of the CFA period'): RawPairs(tmp_path, size=31)[0]


def test_torture_patterns_and_grid_score():
    imgs, names = torture_patterns(26, 48, seed=3)
    assert imgs.shape == (26, 3, 48,
                          48) and names[:13] == list(TORTURE_FAMILIES) and 0 <= imgs.min() and imgs.max() <= 1
    ref = imgs[:4]
    grid = torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(0)).repeat(1, 1, 24, 24) - 0.5
    assert grid_score(ref + 0.02 * grid, ref, 2) > 20                  # a pure 2x2-periodic error
    assert abs(grid_score(ref + 0.01 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(1)), ref, 2)) < 2
    with pytest.raises(ValueError, match='differ'): grid_score(ref, ref[:, :2], 2)
