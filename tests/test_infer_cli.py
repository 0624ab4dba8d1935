"""dfr-infer end to end, in-process: files, folders, globs and videos in; overlays, masks, JSON Lines out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from dfr_edge.cli.infer import main

BOX_KEYS = {"x", "y", "width", "height", "area", "peak"}


def two_images(tiny_data: Path, folder: Path) -> list[Path]:
    """A normal and a defective 128 px test image copied into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    good = shutil.copy(tiny_data / "test" / "good" / "000.png", folder / "good.png")
    bad = shutil.copy(tiny_data / "test" / "blob" / "000.png", folder / "blob.png")
    return [Path(good), Path(bad)]


def write_video(path: Path, frames: int, width: int, height: int) -> None:
    rng = np.random.default_rng(1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (width, height))
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    writer.release()


def read_results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def pngs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_mixed_inputs(tiny_onnx, tiny_data, tmp_path, capsys):
    folder = tmp_path / "in"
    good, bad = two_images(tiny_data, folder)
    (folder / "x.png").write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    write_video(folder / "clip.avi", frames=3, width=96, height=80)
    (folder / "notes.txt").write_text("not an input")  # folders yield images and videos only
    extra = tmp_path / "extra"
    extra.mkdir()
    cv2.imwrite(str(extra / "wide.jpg"), cv2.resize(cv2.imread(str(bad)), (90, 70)))
    out = tmp_path / "out"

    code = main([str(tiny_onnx), str(folder), str(extra / "*.jpg"), str(tmp_path / "missing.png"),
                 "--out", str(out), "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 1
    assert "missing.png matched no file" in captured.err
    assert "x.png" in captured.err
    assert "6 image(s) processed" in captured.out and "2 skipped" in captured.out

    assert not (out / "results.jsonl.partial").exists()
    records = read_results(out)
    errors = [r for r in records if "error" in r]
    done = [r for r in records if "error" not in r]
    assert len(errors) == 1 and errors[0]["path"] == str(folder / "x.png") and errors[0]["name"] == "x"
    assert isinstance(errors[0]["error"], str) and errors[0]["error"]

    sizes = {str(good): (128, 128), str(bad): (128, 128), str(extra / "wide.jpg"): (70, 90),
             **{f"{folder / 'clip.avi'}#frame={i}": (80, 96) for i in range(3)}}
    video = [f"{folder / 'clip.avi'}#frame={i}" for i in range(3)]  # folders are listed sorted
    assert [r["path"] for r in records] == [str(bad), *video, str(good), str(folder / "x.png"),
                                            str(extra / "wide.jpg")]
    assert sorted(r["path"] for r in done) == sorted(sizes)
    assert len({r["name"] for r in done}) == len(done)
    image_threshold = json.loads((tiny_onnx.parent / "dfr.json").read_text())["thresholds"]["image"]
    for record in done:
        assert type(record["score"]) is float and type(record["anomalous"]) is bool
        assert record["anomalous"] == (record["score"] > image_threshold)
        assert isinstance(record["boxes"], list)
        for box in record["boxes"]:
            assert set(box) == BOX_KEYS
            assert all(type(box[k]) is int for k in BOX_KEYS - {"peak"}) and type(box["peak"]) is float
    assert any(r["boxes"] for r in done)  # the defective image has defect regions

    expected = {f"{r['name']}.png" for r in done}
    assert pngs(out / "overlays") == expected  # no PNG for the corrupt file, no temporary files left
    assert pngs(out / "masks") == expected
    for record in done:
        height, width = sizes[record["path"]]
        mask = cv2.imread(str(out / "masks" / f"{record['name']}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (height, width) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        # boxes are found on the model's map and scaled: the frame-size mask lies within one map pixel of them
        grow = -(-max(height, width) // 64) + 1  # map pixels are at most this many frame pixels (64 px model)
        covered = np.zeros_like(mask, bool)
        for box in record["boxes"]:
            covered[max(0, box["y"] - grow) : box["y"] + box["height"] + grow,
                    max(0, box["x"] - grow) : box["x"] + box["width"] + grow] = True
        assert not ((mask == 255) & ~covered).any()
        overlay = cv2.imread(str(out / "overlays" / f"{record['name']}.png"), cv2.IMREAD_UNCHANGED)
        assert overlay.shape == (height, width, 3)


def test_all_inputs_fine(tiny_onnx, tiny_data, tmp_path, capsys):
    folder = tmp_path / "in"
    two_images(tiny_data, folder)
    out = tmp_path / "out"
    assert main([str(tiny_onnx), str(folder), "--out", str(out)]) == 0
    assert "2 image(s) processed" in capsys.readouterr().out
    assert len(read_results(out)) == 2 and all("error" not in r for r in read_results(out))
    assert pngs(out / "overlays") == pngs(out / "masks") == {"good.png", "blob.png"}


def test_no_images_writes_only_results(tiny_onnx, tiny_data, tmp_path):
    good, _ = two_images(tiny_data, tmp_path / "in")
    out = tmp_path / "out"
    assert main([str(tiny_onnx), str(good), "--out", str(out), "--no-images"]) == 0
    assert pngs(out) == {"results.jsonl"}
    assert [r["path"] for r in read_results(out)] == [str(good)]


def test_threshold_overrides(tiny_onnx, tiny_data, tmp_path):
    folder = tmp_path / "in"
    two_images(tiny_data, folder)
    out = tmp_path / "out"
    assert main([str(tiny_onnx), str(folder), "--out", str(out), "--pixel-threshold", "1e9",
                 "--image-threshold=-1e9"]) == 0
    records = read_results(out)
    assert len(records) == 2
    for record in records:
        assert record["boxes"] == [] and record["anomalous"] is True
        mask = cv2.imread(str(out / "masks" / f"{record['name']}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (128, 128) and not mask.any()


def test_no_inputs_found_is_a_usage_error(tiny_onnx, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    assert main([str(tiny_onnx), str(empty), str(tmp_path / "*.png"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: no input images or videos found" in err
    assert not (out / "results.jsonl").exists()


def test_missing_model_is_a_usage_error(tiny_data, tmp_path, capsys):
    good, _ = two_images(tiny_data, tmp_path / "in")
    assert main([str(tmp_path / "none.onnx"), str(good), "--out", str(tmp_path / "out")]) == 2
    assert "error:" in capsys.readouterr().err


def test_same_stem_from_different_folders(tiny_onnx, tiny_data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shutil.copy(tiny_data / "test" / "good" / "000.png", a / "img.png")
    shutil.copy(tiny_data / "test" / "blob" / "000.png", b / "img.png")
    out = tmp_path / "out"
    assert main([str(tiny_onnx), str(a / "img.png"), str(b), "--out", str(out)]) == 0
    records = read_results(out)
    assert [r["path"] for r in records] == [str(a / "img.png"), str(b / "img.png")]
    names = [r["name"] for r in records]
    assert len(set(names)) == 2
    assert pngs(out / "masks") == pngs(out / "overlays") == {f"{n}.png" for n in names}
    # each output belongs to its own input: the two images score differently
    assert records[0]["score"] != records[1]["score"]


def test_unreadable_video_is_reported(tiny_onnx, tiny_data, tmp_path):
    good, _ = two_images(tiny_data, tmp_path / "in")
    broken = tmp_path / "broken.avi"
    broken.write_bytes(np.random.default_rng(2).integers(0, 256, 500, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    assert main([str(tiny_onnx), str(good), str(broken), "--out", str(out)]) == 1
    records = read_results(out)
    assert [("error" in r, r["path"]) for r in records] == [(False, str(good)), (True, str(broken))]
