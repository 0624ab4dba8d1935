"""Low-contrast copies of a dataset: darker, flatter images, the same masks and layout, reused not overwritten."""

from __future__ import annotations

import numpy as np
import pytest

from dfr_edge.data.images import read_image, read_mask
from dfr_edge.data.mvtec import open_dataset
from dfr_edge.data.variants import LowContrast, write_low_contrast


def test_low_contrast_copy(tmp_path, tiny_data):
    variant = LowContrast(gain=0.2, offset=5)
    out = write_low_contrast(tiny_data, tmp_path / "dark", variant)
    source, copy = open_dataset(tiny_data), open_dataset(out)
    assert [p.name for p in copy.train] == [p.name for p in source.train]
    assert [(s.defect_type, s.path.name) for s in copy.test] == [(s.defect_type, s.path.name) for s in source.test]
    original, dark = read_image(source.train[0]), read_image(copy.train[0])
    assert np.array_equal(dark, variant.apply(original))
    assert dark.max() <= 5 + 0.2 * 255 + 0.5 and dark.std() < original.std() * 0.25
    for a, b in zip(source.test, copy.test):
        if a.mask_path is not None:
            assert np.array_equal(read_mask(a.mask_path), read_mask(b.mask_path))
    stamp = (out / "variant.json").stat().st_mtime_ns
    assert write_low_contrast(tiny_data, out, variant) == out  # the same variant is reused as is
    assert (out / "variant.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="not this variant"):
        write_low_contrast(tiny_data, out, LowContrast(gain=0.5, offset=0))


@pytest.mark.parametrize("gain, offset", [(0.0, 0.0), (1.5, 0.0), (0.5, 200.0), (0.5, -1.0)])
def test_low_contrast_refuses_levels_outside_the_grey_range(gain, offset):
    with pytest.raises(ValueError):
        LowContrast(gain=gain, offset=offset)
