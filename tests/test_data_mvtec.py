from pathlib import Path

import cv2
import numpy as np
import pytest

from dfr_edge.data import mvtec
from dfr_edge.geometry import Geometry


def write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def image(height: int = 16, width: int = 20) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def defect_mask(height: int = 16, width: int = 20) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[4:12, 8:16] = 255
    return mask


@pytest.fixture
def mvtec_root(tmp_path) -> Path:
    """A tiny MVTec AD category: 2 train images, 1 good and 2 scratch test images with masks."""
    root = tmp_path / "bottle"
    for name in ["000.png", "001.png"]:
        write(root / "train" / "good" / name, image())
    write(root / "test" / "good" / "000.png", image())
    for name in ["000", "001"]:
        write(root / "test" / "scratch" / f"{name}.png", image())
        write(root / "ground_truth" / "scratch" / f"{name}_mask.png", defect_mask())
    return root


def test_mvtec_layout_is_detected(mvtec_root):
    dataset = mvtec.open_dataset(mvtec_root)
    assert dataset.root == mvtec_root
    assert [p.name for p in dataset.train] == ["000.png", "001.png"]
    assert [(s.defect_type, s.path.name, s.is_anomalous) for s in dataset.test] == [
        ("good", "000.png", False),
        ("scratch", "000.png", True),
        ("scratch", "001.png", True),
    ]
    assert dataset.test[0].mask_path is None
    assert dataset.test[2].mask_path == mvtec_root / "ground_truth" / "scratch" / "001_mask.png"
    mvtec.require_test_set(dataset)


def test_mvtec_without_test_folder_has_empty_test_set(tmp_path):
    write(tmp_path / "train" / "good" / "000.png", image())
    dataset = mvtec.open_dataset(tmp_path)
    assert len(dataset.train) == 1 and dataset.test == []
    with pytest.raises(ValueError, match="has no test set") as info:
        mvtec.require_test_set(dataset)
    assert str(tmp_path / "test") in str(info.value)


def test_test_folder_without_type_folders_is_an_error(tmp_path):
    write(tmp_path / "train" / "good" / "000.png", image())
    (tmp_path / "test").mkdir()
    with pytest.raises(ValueError, match="no defect-type folders") as info:
        mvtec.open_dataset(tmp_path)
    assert str(tmp_path / "test") in str(info.value)


def test_plain_folder_of_good_images(tmp_path):
    for name in ["b.png", "a.jpg"]:
        write(tmp_path / name, image())
    dataset = mvtec.open_dataset(tmp_path)
    assert [p.name for p in dataset.train] == ["a.jpg", "b.png"]
    assert dataset.test == []


def test_wrong_layout_explains_both_accepted_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError) as info:
        mvtec.open_dataset(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "train/good" in message and "plain folder" in message


def test_folder_of_categories_suggests_passing_one(mvtec_root):
    with pytest.raises(ValueError, match=r"several categories \(bottle\)"):
        mvtec.open_dataset(mvtec_root.parent)


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        mvtec.open_dataset(tmp_path / "missing")


def test_missing_mask_names_image_and_expected_mask(mvtec_root):
    expected = mvtec_root / "ground_truth" / "scratch" / "001_mask.png"
    expected.unlink()
    with pytest.raises(FileNotFoundError) as info:
        mvtec.open_dataset(mvtec_root)
    assert str(mvtec_root / "test" / "scratch" / "001.png") in str(info.value)
    assert str(expected) in str(info.value)


def test_load_test_arrays_resizes_and_labels(mvtec_root):
    arrays = mvtec.load_test_arrays(mvtec.open_dataset(mvtec_root), Geometry(8, 10))
    assert arrays.images.shape == (3, 8, 10, 3) and arrays.images.dtype == np.uint8
    assert arrays.masks.shape == (3, 8, 10) and arrays.masks.dtype == bool
    np.testing.assert_array_equal(arrays.labels, [False, True, True])
    assert arrays.defect_types == ["good", "scratch", "scratch"]
    assert arrays.paths[1] == mvtec_root / "test" / "scratch" / "000.png"
    assert not arrays.masks[0].any()
    half_size_mask = np.zeros((8, 10), bool)
    half_size_mask[2:6, 4:8] = True
    np.testing.assert_array_equal(arrays.masks[1], half_size_mask)


def test_mask_size_mismatch_names_both_files(mvtec_root):
    mask = write(mvtec_root / "ground_truth" / "scratch" / "001_mask.png", defect_mask(8, 10))
    with pytest.raises(ValueError, match="10x8") as info:
        mvtec.load_test_arrays(mvtec.open_dataset(mvtec_root), Geometry(8, 10))
    assert str(mask) in str(info.value)
    assert str(mvtec_root / "test" / "scratch" / "001.png") in str(info.value)


def test_load_test_arrays_requires_a_test_set(tmp_path):
    write(tmp_path / "000.png", image())
    with pytest.raises(ValueError, match="has no test set"):
        mvtec.load_test_arrays(mvtec.open_dataset(tmp_path), Geometry(8, 8))
