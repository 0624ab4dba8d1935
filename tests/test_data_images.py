from pathlib import Path

import cv2
import numpy as np
import pytest

from dfr_edge.data.images import (
    ImageReadError,
    list_images,
    load_images,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
)


def write(path: Path, img: np.ndarray) -> Path:
    ok, encoded = cv2.imencode(path.suffix, img)
    assert ok
    encoded.tofile(path)
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_colour_image_is_read_as_bgr_unchanged(tmp_path, rng):
    img = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    out = read_image(write(tmp_path / "colour.png", img))
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, img)


def test_non_ascii_path_is_readable(tmp_path, rng):
    img = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_image(write(tmp_path / "prüfteil_01.png", img)), img)


def test_grayscale_is_replicated_to_three_channels(tmp_path, rng):
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    out = read_image(write(tmp_path / "grey.png", grey))
    assert out.shape == (6, 5, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], grey)


def test_alpha_channel_is_dropped(tmp_path, rng):
    bgra = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    out = read_image(write(tmp_path / "alpha.png", bgra))
    assert out.shape == (6, 5, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, bgra[:, :, :3])


def test_16_bit_is_scaled_to_8_bit_with_rounding(tmp_path):
    deep = np.array([[0, 257 * 100, 65535, 300, 385]], np.uint16)
    out = read_image(write(tmp_path / "deep.png", deep))
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255, 1, 1])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b"this is not a png at all"), "corrupt"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: None, "does not exist"),
    ],
)
def test_unreadable_file_names_path_and_reason(tmp_path, make, reason):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == path
    assert str(path) in str(info.value) and reason in str(info.value)
    assert "replace it with a readable image or remove it" in str(info.value)  # advice every command can follow


def test_mask_is_bool_and_any_nonzero_channel_marks_defect(tmp_path):
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[1, 2, 2] = 255
    colour[3, 0, 0] = 1
    mask = read_mask(write(tmp_path / "colour_mask.png", colour))
    assert mask.dtype == bool and mask.shape == (4, 4)
    assert set(zip(*np.nonzero(mask))) == {(1, 2), (3, 0)}

    grey = np.zeros((4, 4), np.uint8)
    grey[0, 0] = 255
    np.testing.assert_array_equal(read_mask(write(tmp_path / "grey_mask.png", grey)), grey > 0)


def test_unreadable_mask_raises_image_read_error(tmp_path):
    path = tmp_path / "m_mask.png"
    path.write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match="cannot read mask"):
        read_mask(path)


def test_resize_returns_input_when_size_matches(rng):
    img = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    assert resize_image(img, 8, 6) is img


def test_shrinking_averages_areas_instead_of_aliasing():
    dots = np.zeros((16, 16, 3), np.uint8)
    dots[::4, ::4] = 255  # one lit pixel per 4x4 cell: point sampling would miss them all
    small = resize_image(dots, 4, 4)
    assert small.shape == (4, 4, 3) and small.dtype == np.uint8
    np.testing.assert_array_equal(small, np.full((4, 4, 3), 16))


@pytest.mark.parametrize("frame_hw", [(480, 640), (900, 900), (1080, 1920), (300, 2000)],
                         ids=["vga", "bottle", "1080p", "wide-strip"])
def test_large_shrinks_stay_within_grey_levels_of_exact_area_averaging(rng, frame_hw):
    """The stepped shrink (halvings, bilinear to 2x, 2x2 means) against OpenCV's one-step area resize."""
    noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # texture of 8 output pixels and more
    scene = cv2.resize(noise, frame_hw[::-1], interpolation=cv2.INTER_CUBIC)
    scene[frame_hw[0] // 3 :, frame_hw[1] // 2 :] //= 4  # and a hard edge
    small = resize_image(scene, 256, 256)
    exact = cv2.resize(scene, (256, 256), interpolation=cv2.INTER_AREA)
    diff = np.abs(small.astype(int) - exact)
    assert small.shape == (256, 256, 3) and small.dtype == np.uint8
    assert diff.mean() < 0.75 and np.percentile(diff, 99) <= 2


@pytest.mark.parametrize("frame_hw", [(900, 900), (1080, 1920)])
def test_large_shrinks_of_pixel_stripes_give_their_mean(frame_hw):
    """Finest detail a camera can deliver: point or bilinear sampling would return stripes or moire."""
    stripes = np.zeros((*frame_hw, 3), np.uint8)
    stripes[:, ::2] = 255
    np.testing.assert_allclose(resize_image(stripes, 256, 256), 127.5, atol=1)
    np.testing.assert_allclose(resize_image(stripes.transpose(1, 0, 2), 256, 256), 127.5, atol=1)


@pytest.mark.parametrize("height", [8, 2], ids=["enlarge", "enlarge-width-shrink-height"])
def test_enlarging_interpolates_linearly(height):
    edge = np.zeros((8, 2, 3), np.uint8)
    edge[:, 1] = 255
    row = resize_image(edge, height, 8)[0, :, 0]
    assert np.all(np.diff(row.astype(int)) >= 0)
    assert np.any((row > 0) & (row < 255))  # nearest-like area sampling would give only 0 and 255


def test_resize_mask_thresholds_bilinear_at_half():
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    big = resize_mask(mask, 8, 8)
    assert big.dtype == bool and big.shape == (8, 8)
    np.testing.assert_array_equal(big, np.kron(mask, np.ones((2, 2), bool)))

    speck = np.zeros((8, 8), bool)
    speck[0, 0] = True
    assert not resize_mask(speck, 2, 2).any()


def test_list_images_is_sorted_flat_and_case_insensitive(tmp_path):
    img = np.zeros((2, 2, 3), np.uint8)
    for name in ["b.JPG", "a.png", "c.TIFF", "d.bmp"]:
        write(tmp_path / name, img)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "e.png", img)
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "c.TIFF", "d.bmp"]


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_list_images_folder_without_images_lists_extensions(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError) as info:
        list_images(tmp_path)
    assert str(tmp_path) in str(info.value) and ".png" in str(info.value) and ".tiff" in str(info.value)


@pytest.fixture
def good_and_bad(tmp_path, rng) -> list[Path]:
    good = write(tmp_path / "good.png", rng.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG truncated")
    return [bad, good]


def test_load_images_fails_on_first_bad_file_by_default(good_and_bad):
    with pytest.raises(ImageReadError) as info:
        load_images(good_and_bad, 5, 6)
    assert info.value.path == good_and_bad[0]


def test_load_images_skips_and_reports_bad_files(good_and_bad):
    bad, good = good_and_bad
    loaded = load_images(good_and_bad, 5, 6, skip_bad=True)
    assert loaded.images.shape == (1, 5, 6, 3) and loaded.images.dtype == np.uint8
    assert loaded.paths == [good]
    assert loaded.skipped == [(bad, "file is corrupt or not an image")]


def test_load_images_with_nothing_loadable_raises(good_and_bad):
    bad = good_and_bad[0]
    with pytest.raises(ValueError, match="no image could be loaded") as info:
        load_images([bad], 5, 6, skip_bad=True)
    assert str(bad) in str(info.value)
