from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from dfr_edge.data import synthetic
from dfr_edge.data.images import read_image, read_mask
from dfr_edge.data.mvtec import open_dataset
from dfr_edge.data.synthetic import (
    SyntheticSpec,
    add_defect,
    defect_contrast,
    generate_dataset,
    normal_crop,
)

SMALL = SyntheticSpec(texture="gravel", size=64, n_train=3, n_test_good=2, n_test_per_defect=2, seed=7)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), SMALL)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_spec_gives_byte_identical_files(generated, tmp_path):
    again = generate_dataset(tmp_path, SMALL)
    assert again == tmp_path / "gravel"
    assert files(again) == files(generated)


def test_different_seed_gives_different_images(generated, tmp_path):
    other = generate_dataset(tmp_path, replace(SMALL, seed=8))
    assert files(other)["train/good/000.png"] != files(generated)["train/good/000.png"]


def test_layout_is_readable_as_mvtec(generated):
    dataset = open_dataset(generated)
    assert [p.name for p in dataset.train] == ["000.png", "001.png", "002.png"]
    counts = {t: sum(s.defect_type == t for s in dataset.test) for t in ("good", *synthetic.DEFECT_TYPES)}
    assert counts == {"good": 2, "scratch": 2, "blob": 2, "cutout": 2, "stain": 2}
    assert "CC0" in (generated / "README.txt").read_text()


def test_normal_images_are_grey(generated):
    for path in open_dataset(generated).train:
        img = read_image(path)
        assert img.shape == (64, 64, 3)
        assert (img == img[:, :, :1]).all()


def test_saved_masks_are_binary_and_large_enough(generated):
    min_area = synthetic.MIN_DEFECT_FRACTION * 64 * 64
    for sample in open_dataset(generated).test:
        if sample.is_anomalous:
            raw = np.unique(read_image(sample.mask_path))
            assert set(raw) == {0, 255}
            assert read_mask(sample.mask_path).sum() >= min_area


@pytest.mark.parametrize("defect_type", synthetic.DEFECT_TYPES)
@pytest.mark.parametrize("texture", synthetic.TEXTURES)
def test_defect_changes_the_masked_pixels_visibly(texture, defect_type):
    rng = np.random.default_rng(0)
    source = getattr(skimage.data, texture)()
    for _ in range(5):
        clean = normal_crop(source, 64, rng)
        image, mask = add_defect(clean, defect_type, rng)
        assert image.dtype == np.uint8 and image.shape == clean.shape and mask.shape == (64, 64)
        assert mask.sum() >= synthetic.MIN_DEFECT_FRACTION * mask.size
        inside = defect_contrast(image, clean, mask)
        outside = defect_contrast(image, clean, ~mask)
        assert inside >= synthetic.MIN_DEFECT_CONTRAST
        assert inside > 5 * outside


def test_stain_is_coloured(generated):
    stain = read_image(generated / "test" / "stain" / "000.png").astype(int)
    mask = read_mask(generated / "ground_truth" / "stain" / "000_mask.png")
    spread = stain.max(axis=2) - stain.min(axis=2)
    assert spread[mask].mean() > 40 and np.median(spread[~mask]) == 0


def test_second_call_reuses_the_folder(generated):
    before = {p: p.stat().st_mtime_ns for p in generated.rglob("*")}
    assert generate_dataset(generated.parent, SMALL) == generated
    assert {p: p.stat().st_mtime_ns for p in generated.rglob("*")} == before


def test_refuses_folder_made_with_another_spec(generated):
    with pytest.raises(FileExistsError) as info:
        generate_dataset(generated.parent, replace(SMALL, n_train=4))
    assert str(generated) in str(info.value) and "delete" in str(info.value)


def test_refuses_non_empty_folder_without_spec(tmp_path):
    (tmp_path / "brick").mkdir()
    (tmp_path / "brick" / "mine.txt").write_text("someone else's file")
    with pytest.raises(FileExistsError, match="choose another output folder"):
        generate_dataset(tmp_path, SyntheticSpec(size=64, n_train=1, n_test_good=1, n_test_per_defect=1))


@pytest.mark.parametrize(
    ("change", "message"),
    [({"texture": "marble"}, "unknown texture"), ({"size": 1024}, "size"), ({"n_train": 0}, "n_train")],
)
def test_invalid_spec_is_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        SyntheticSpec(**change)


def test_unknown_defect_type_is_rejected():
    with pytest.raises(ValueError, match="unknown defect type"):
        add_defect(np.zeros((64, 64, 3), np.uint8), "rust", np.random.default_rng(0))


# ----------------------------------------------------------------------------------------------
# Hard sets and the drawers dfr-tune pastes


SMALL_HARD = {name: synthetic.HardSetSpec(name=name, n_train=2, n_test_good=1, n_test_per_defect=2, seed=3)
              for name in synthetic.HARD_SETS}


@pytest.mark.parametrize("name", list(synthetic.HARD_SETS))
def test_hard_set_is_byte_reproducible_and_readable_as_mvtec(tmp_path, name):
    first = synthetic.generate_hard_set(tmp_path / "a", SMALL_HARD[name])
    second = synthetic.generate_hard_set(tmp_path / "b", SMALL_HARD[name])
    assert files(first) == files(second)
    dataset = open_dataset(first)
    kinds = {s.defect_type for s in dataset.test}
    assert kinds == {"good", *synthetic.HARD_SETS[name].defect_types}
    for sample in dataset.test:
        if sample.is_anomalous:
            assert read_mask(sample.mask_path).shape == read_image(sample.path).shape[:2]


def test_hard_set_shapes_follow_the_failures_they_model(tmp_path):
    strip = open_dataset(synthetic.generate_hard_set(tmp_path, SMALL_HARD["strip_cracks"]))
    assert read_image(strip.train[0]).shape == (320, 128, 3)  # tall: H x W
    rubber = read_image(open_dataset(synthetic.generate_hard_set(tmp_path, SMALL_HARD["dark_rubber"])).train[0])
    assert rubber.shape == (192, 256, 3) and rubber.mean() < 60
    rng = np.random.default_rng(0)
    sides = {synthetic.grey_crop_surface(rng).shape[0] for _ in range(6)}
    assert len(sides) == 6 and min(sides) >= 100 and max(sides) <= 265


def test_unknown_hard_set_is_refused():
    with pytest.raises(ValueError, match="strip_cracks"):
        synthetic.HardSetSpec(name="marble")


@pytest.mark.parametrize("defect_type", ["crack", "pit", "perlin_stain", "cutpaste", "scratch"])
def test_pasted_defect_mask_covers_the_pixels_it_changed(defect_type):
    rng = np.random.default_rng(5)
    for _ in range(4):
        clean = synthetic.grey_crop_surface(rng)
        image, mask = add_defect(clean, defect_type, rng)
        change = np.abs(image.astype(np.float32) - clean).max(axis=2)
        assert defect_contrast(image, clean, mask) >= synthetic.MIN_DEFECT_CONTRAST
        strong = change > 0.5 * change[mask].mean()  # soft edges of stains fade out below this
        assert (strong & ~mask).sum() <= 0.05 * strong.sum()


def test_fractal_noise_is_seeded_and_normalised():
    a = synthetic.fractal_noise((40, 60), 10, np.random.default_rng(1))
    b = synthetic.fractal_noise((40, 60), 10, np.random.default_rng(1))
    assert a.shape == (40, 60) and np.array_equal(a, b)
    assert abs(a.mean()) < 1e-5 and abs(a.std() - 1) < 1e-4
