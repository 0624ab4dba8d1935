"""Input geometry (contract 4): frame -> model inputs -> frame pixels, for every mode, ROI and tiles."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from dfr_edge.config import TrainConfig, parse_image_size
from dfr_edge.geometry import Geometry, Tiling, auto_image_size, tile_starts
from dfr_edge.metrics import compute_metrics
from dfr_edge.runtime.detector import Detector

NORMAL_LEVEL = 5.0


class EchoBackend:
    """A faithful stand-in for a model: the map is what the model saw (the input's first channel).

    So a frame's map must come back equal to the frame wherever the geometry maps pixels correctly.
    """

    name = "echo"
    export_info: dict = {}

    def __init__(self, geometry: Geometry | None, height: int = 64, width: int = 128, max_batch: int = 64):
        self.max_batch = max_batch
        self.height, self.width = (geometry.height, geometry.width) if geometry else (height, width)
        self.manifest = {"input": {"height": self.height, "width": self.width},
                         "thresholds": {"pixel": 200.0, "image": 200.0},
                         "normal_stats": {"pixel_median": NORMAL_LEVEL}}
        if geometry is not None:
            self.manifest["geometry"] = geometry.to_dict()
        self.batches: list[int] = []

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert images.dtype == np.uint8 and images.shape[1:] == (self.height, self.width, 3)
        self.batches.append(len(images))
        amap = images[..., 0].astype(np.float32)
        return amap, amap.max(axis=(1, 2))


def ramp_frame(height: int, width: int) -> np.ndarray:
    """A smooth frame (values change by under one grey level per pixel), so resampling barely alters it."""
    y, x = np.mgrid[0:height, 0:width]
    value = 20 + 150 * (0.5 * x / width + 0.5 * y / height)
    return np.repeat(np.rint(value).astype(np.uint8)[:, :, None], 3, axis=2)


@pytest.mark.parametrize("length, tile, overlap", [(100, 100, 16), (101, 100, 16), (300, 64, 16), (257, 64, 0),
                                                   (30, 64, 16), (1000, 256, 32)])
def test_tiles_cover_every_pixel_with_at_least_the_overlap(length, tile, overlap):
    spans = tile_starts(length, tile, overlap)
    covered = np.zeros(length, int)
    for start, size in spans:
        assert 0 <= start and start + size <= length and size == min(tile, length)
        covered[start : start + size] += 1
    assert covered.min() >= 1
    for (a, size), (b, _) in zip(spans, spans[1:]):
        assert a + size - b >= overlap


@pytest.mark.parametrize("region", [(64, 128), (200, 150), (130, 500)])
def test_constant_tile_maps_stitch_to_a_constant_map(region):
    plan = Geometry(64, 64, tiling=Tiling((64, 64), 16)).plan(region)
    stitched = plan.stitch(np.full((len(plan), 64, 64), 3.25, np.float32), np.zeros(len(plan)))
    assert stitched.values.shape == region and stitched.valid is None
    np.testing.assert_allclose(stitched.values, 3.25, rtol=1e-6)


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop"])
@pytest.mark.parametrize("frame_hw", [(120, 300), (300, 120), (64, 128)])
def test_round_trip_returns_the_frame_in_its_own_pixels(mode, frame_hw):
    geometry = Geometry(64, 128, mode)
    frame = ramp_frame(*frame_hw)
    detection = Detector(EchoBackend(geometry)).detect([frame])[0]
    assert detection.anomaly_map.shape == frame_hw and detection.mask.shape == frame_hw
    seen = detection.anomaly_map != NORMAL_LEVEL
    error = np.abs(detection.anomaly_map - frame[..., 0])[seen]
    frame_aspect = frame_hw[1] / frame_hw[0]
    kept = min(frame_aspect / 2, 2 / frame_aspect) if mode == "crop" else 1.0  # the model's aspect is 2
    assert seen.mean() == pytest.approx(kept, abs=0.02)
    assert np.percentile(error, 99) <= 3.0  # resampling, not misplacement (which would be tens of levels)


def test_crop_leaves_the_sides_uninspected_at_the_normal_level():
    frame = ramp_frame(64, 256)  # aspect 4 into a 64x128 model: the middle half is kept
    frame[:, :32] = 255  # a bright stripe outside the crop
    detection = Detector(EchoBackend(Geometry(64, 128, "crop"))).detect([frame])[0]
    assert (detection.anomaly_map[:, :64] == NORMAL_LEVEL).all() and not detection.mask[:, :64].any()
    assert detection.score < 255


def test_letterbox_padding_is_never_flagged_nor_scored():
    geometry = Geometry(64, 128, "letterbox")
    target = geometry.plan((200, 100)).placements[0].target  # a tall frame: padding left and right

    class PaddingHot(EchoBackend):
        def infer(self, images):
            amap = np.full(images.shape[:3], 1000.0, np.float32)  # the padding looks maximally anomalous
            amap[:, target.y : target.y + target.h, target.x : target.x + target.w] = 1.0
            return amap, amap.max(axis=(1, 2))

    detection = Detector(PaddingHot(geometry)).detect([ramp_frame(200, 100)])[0]
    assert detection.score == 1.0 and not detection.anomalous
    assert detection.anomaly_map.max() == 1.0 and not detection.mask.any() and not detection.boxes


def test_roi_maps_and_boxes_come_back_in_frame_coordinates():
    geometry = Geometry(64, 128, roi=(100, 40, 256, 128))  # x, y, w, h: same aspect as the model
    frame = np.full((240, 480, 3), 30, np.uint8)
    frame[90:110, 200:230] = 250  # a defect inside the ROI
    frame[0:20, 0:20] = 250  # bright, but outside the ROI
    detection = Detector(EchoBackend(geometry)).detect([frame])[0]
    assert detection.anomaly_map.shape == (240, 480)
    outside = np.ones((240, 480), bool)
    outside[40:168, 100:356] = False
    assert (detection.anomaly_map[outside] == NORMAL_LEVEL).all() and not detection.mask[outside].any()
    (box,) = detection.boxes
    assert abs(box.x - 200) <= 2 and abs(box.y - 90) <= 2 and abs(box.width - 30) <= 4 and abs(box.height - 20) <= 4


def test_roi_outside_the_frame_is_a_clear_error():
    with pytest.raises(ValueError, match="does not fit in a 100x50 frame"):
        Detector(EchoBackend(Geometry(64, 128, roi=(60, 0, 64, 32)))).detect([ramp_frame(50, 100)])


@pytest.mark.parametrize("max_batch", [64, 4])
def test_tiles_run_batched_and_stitch_back_exactly(max_batch):
    geometry = Geometry(64, 128, tiling=Tiling((64, 128), 16))
    backend = EchoBackend(geometry, max_batch=max_batch)
    frame = ramp_frame(150, 300)
    detection = Detector(backend).detect([frame])[0]
    tiles = len(geometry.plan((150, 300)))
    assert tiles == 9 and sum(backend.batches) == tiles
    assert max(backend.batches) == min(tiles, max_batch)  # one batch, or chunks of the backend's max
    np.testing.assert_allclose(detection.anomaly_map, frame[..., 0], atol=1e-3)  # 1:1 tiles: no resampling
    assert detection.score == frame[..., 0].max()


def test_manifest_without_geometry_reads_as_stretch():
    backend = EchoBackend(None)
    assert "geometry" not in backend.manifest
    detector = Detector(backend)
    assert detector.geometry == Geometry(64, 128, "stretch", None, None)
    assert detector.detect([ramp_frame(90, 90)])[0].anomaly_map.shape == (90, 90)


def test_old_bundle_without_geometry_still_loads(tiny_bundle, tmp_path):
    from dfr_edge.bundle import load_bundle

    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    meta = json.loads((old / "dfr.json").read_text())
    assert meta["geometry"] == {"resize": "stretch", "roi": None, "tiling": None, "auto_size": None}
    del meta["geometry"]
    (old / "dfr.json").write_text(json.dumps(meta))
    bundle = load_bundle(old)
    assert Geometry.from_manifest(bundle.manifest) == Geometry(64, 64)


def test_geometry_round_trips_through_its_manifest_section():
    geometry = Geometry(96, 160, "letterbox", (1, 2, 300, 200), Tiling((96, 160), 24))
    meta = {"input": {"height": 96, "width": 160}, "geometry": json.loads(json.dumps(geometry.to_dict()))}
    assert Geometry.from_manifest(meta) == geometry


@pytest.mark.parametrize("section", [{"resize": "squash"}, {"tiling": {"tile": [64]}}, {"roi": [1, 2]}, "stretch"])
def test_a_damaged_geometry_section_is_one_clear_error(section):
    from dfr_edge.manifest import ManifestError

    with pytest.raises(ManifestError, match="geometry section is invalid"):
        Geometry.from_manifest({"input": {"height": 64, "width": 64}, "geometry": section})


@pytest.mark.parametrize("sizes, budget, expected", [
    ([(1250, 500)], 256 * 256, (384, 160)),  # tall strip: aspect kept within 5%
    ([(900, 900)], 256 * 256, (256, 256)),  # MVTec bottle: the default
    ([(200, 200), (210, 190)], 256 * 256, (224, 224)),  # small crops: no pointless upscaling
    ([(2048, 2448)], 4 * 256 * 256, (448, 544)),  # a bigger budget buys resolution
])
def test_auto_image_size(sizes, budget, expected):
    height, width = auto_image_size(sizes, budget)
    assert (height, width) == expected and height % 32 == 0 and width % 32 == 0 and height * width <= budget


@pytest.mark.parametrize("text, expected", [("256", [256, 256]), ("384x160", [384, 160]), ("384,160", [384, 160]),
                                            (256, [256, 256]), ([64, 128], [64, 128]), ("AUTO", "auto")])
def test_image_size_forms(text, expected):
    assert parse_image_size(text) == expected


@pytest.mark.parametrize("values, message", [
    ({"image_size": "big"}, "image_size"),
    ({"resize": "squash"}, "resize must be 'stretch' or 'letterbox' or 'crop'"),
    ({"roi": [0, 0, -5, 10]}, "roi"),
    ({"tile": [64, 64], "tile_overlap": 64}, "overlap"),
    ({"image_size": "auto", "tile": [64, 64]}, "auto"),
])
def test_invalid_geometry_configuration_is_named(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**values)


def test_mixed_training_aspects_warn(caplog):
    from dfr_edge.trainer import warn_mixed_aspects

    with caplog.at_level(logging.WARNING):
        warn_mixed_aspects([(100, 100), (100, 105)], Geometry(64, 64))
        assert not caplog.records
        warn_mixed_aspects([(100, 100), (100, 150)], Geometry(64, 64))
    assert "differ in aspect" in caplog.text


def test_metrics_leave_out_pixels_the_model_did_not_see():
    masks = np.zeros((2, 8, 8), bool)
    masks[1, 2:4, 2:4] = True
    maps = masks.astype(np.float32)
    maps[0, :, 0] = 5.0  # high values on pixels outside the inspected area (e.g. outside a crop)
    valid = np.ones((2, 8, 8), bool)
    valid[:, :, 0] = False
    assert compute_metrics(maps, maps.max((1, 2)), masks).pixel_auroc < 1.0
    metrics = compute_metrics(maps, np.array([0.0, 1.0]), masks, valid)
    assert metrics.pixel_auroc == 1.0 and metrics.pro == pytest.approx(1.0)


def wide_dataset(root, height: int = 128, width: int = 256):
    """A small MVTec-layout set of wide (1:2) images from the embedded texture generator."""
    import cv2
    import skimage.data

    from dfr_edge.data.synthetic import add_defect, normal_crop

    texture, rng = skimage.data.brick(), np.random.default_rng(0)

    def image():
        return normal_crop(texture, width, rng)[:height]

    def write(path, img):
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)

    for i in range(12):
        write(root / "train" / "good" / f"{i:03d}.png", image())
    for i in range(3):
        write(root / "test" / "good" / f"{i:03d}.png", image())
    for i in range(3):
        defective, mask = add_defect(image(), "blob", rng)
        write(root / "test" / "blob" / f"{i:03d}.png", defective)
        write(root / "ground_truth" / "blob" / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    return root


@pytest.mark.slow
def test_non_square_model_from_training_to_the_runtime(tmp_path):
    """Image size auto on 1:2 images picks 64x128 (h x w); dfr-train -> dfr-eval -> dfr-export -> Detector."""
    import cv2

    from dfr_edge import manifest
    from dfr_edge.cli import evaluate as eval_cli
    from dfr_edge.cli import export as export_cli
    from dfr_edge.cli import train as train_cli
    from dfr_edge.runtime import load_detector

    data, bundle = wide_dataset(tmp_path / "wide"), tmp_path / "bundle"
    config = tmp_path / "c.yaml"
    config.write_text("auto_max_pixels: 8192\nbatch_positions: 64\npca_images: 4\n")  # 64x128 is the largest 1:2
    assert train_cli.main(["--data", str(data), "--out", str(bundle), "--config", str(config),
                           "--image-size", "auto", "--steps", "30"]) == 0
    meta = manifest.read(bundle / "dfr.json")
    assert (meta["input"]["height"], meta["input"]["width"]) == (64, 128) and meta["config"]["image_size"] == [64, 128]
    assert meta["features"]["grid"] == [16, 32] and meta["geometry"]["resize"] == "stretch"
    assert meta["geometry"]["auto_size"] == {"median_size": [128, 256], "max_pixels": 8192, "chosen": [64, 128]}
    report = tmp_path / "m.json"
    assert eval_cli.main([str(bundle), "--data", str(data), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["images"] == 6
    assert export_cli.main([str(bundle)]) == 0
    detector = load_detector(bundle / "model.onnx")
    frame = cv2.imread(str(data / "test" / "blob" / "000.png"))
    detection = detector.detect([frame])[0]
    assert detection.anomaly_map.shape == frame.shape[:2] == (128, 256)
    assert np.isfinite(detection.score) and detection.mask.shape == (128, 256)


@pytest.mark.slow
@pytest.mark.parametrize("overrides, inputs_per_image", [
    ({"image_size": [64, 128], "resize": "letterbox"}, 1),  # square 128 px images: padded left and right
    ({"image_size": [64, 64], "roi": [0, 0, 128, 96], "tile": [64, 64], "tile_overlap": 16}, 6),
])
def test_training_and_evaluation_share_the_geometry(tiny_data, overrides, inputs_per_image):
    from conftest import tiny_config

    from dfr_edge.bundle import build_manifest
    from dfr_edge.data.mvtec import load_test_arrays, open_dataset
    from dfr_edge.evaluate import evaluate
    from dfr_edge.predict import predict_torch
    from dfr_edge.trainer import train

    result = train(tiny_config(steps=20, **overrides), open_dataset(tiny_data))
    geometry = Geometry.from_manifest(build_manifest(result, tiny_data))
    assert geometry == result.geometry and len(geometry.plan((96, 128) if geometry.roi else (128, 128))) == \
        inputs_per_image
    test = load_test_arrays(open_dataset(tiny_data), geometry)
    evaluation = evaluate(lambda images: predict_torch(result.model, images), test)
    for amap, mask in zip(evaluation.maps, test.masks):
        assert amap.shape == mask.shape == ((64, 64) if geometry.resize == "letterbox" else (96, 128))
    assert 0.0 <= evaluation.metrics.pixel_auroc <= 1.0 and np.isfinite(result.thresholds.pixel)
