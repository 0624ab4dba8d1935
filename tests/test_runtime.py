"""The lean runtime: ONNX Runtime backend, detector, regions and overlays on a real exported model."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dfr_edge.geometry import SampledMap
from dfr_edge.manifest import ManifestError
from dfr_edge.runtime import Detector, load_backend, load_detector
from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend, provider_list
from dfr_edge.runtime.overlay import make_overlay
from dfr_edge.runtime.regions import Box, defect_boxes, sampled_boxes

SIZE = 64  # tests/conftest.py TINY_SIZE: the exported model's input size


@pytest.fixture(scope="module")
def backend(tiny_onnx) -> OnnxRuntimeBackend:
    return load_backend(tiny_onnx)


@pytest.fixture(scope="module")
def test_images(tiny_data) -> np.ndarray:
    """A good and three defective test images at the model size."""
    from dfr_edge.data.images import load_images

    names = ["good/000.png", "blob/000.png", "scratch/000.png", "stain/001.png"]
    return load_images([tiny_data / "test" / n for n in names], SIZE, SIZE).images


@pytest.fixture(scope="module")
def photo(tiny_data) -> np.ndarray:
    """A defective 128 px test image (BGR), the raw material for frames of other sizes."""
    from dfr_edge.data.images import read_image

    return read_image(tiny_data / "test" / "blob" / "000.png")


def test_importing_runtime_does_not_import_torch():
    code = ("import sys, dfr_edge.runtime, dfr_edge.runtime.sources, dfr_edge.runtime.writer; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# --- ONNX Runtime backend -------------------------------------------------------------------------

def test_backend_reads_manifest_and_export_info(backend, tiny_onnx):
    bundle_manifest = json.loads((tiny_onnx.parent / "dfr.json").read_text())
    assert backend.manifest == bundle_manifest
    assert (backend.height, backend.width) == (SIZE, SIZE)
    assert backend.export_info["variant"] == "fp32"
    assert backend.export_info["opset"] == 17
    assert backend.export_info["parity_vs_torch_fp32"]["relative"] <= 1e-4
    assert backend.name == "onnxruntime:CPUExecutionProvider"


def test_backend_matches_torch_model(backend, tiny_onnx, test_images):
    from dfr_edge.bundle import load_bundle
    from dfr_edge.predict import predict_torch

    ref_maps, ref_scores = predict_torch(load_bundle(tiny_onnx.parent).model, test_images)
    maps, scores = backend.infer(test_images)
    assert maps.dtype == np.float32 and scores.dtype == np.float32
    assert maps.shape == (len(test_images), SIZE, SIZE) and scores.shape == (len(test_images),)
    map_range = float(ref_maps.max() - ref_maps.min())
    assert map_range > 0
    assert np.abs(maps - ref_maps).max() <= 1e-4 * map_range
    assert np.abs(scores - ref_scores).max() <= 1e-4 * map_range
    # different images give different answers: the comparison above is not between constants
    assert np.ptp(scores) > 1e-3


@pytest.mark.parametrize("images", [
    np.zeros((1, SIZE, SIZE, 3), np.float32),  # wrong dtype
    np.zeros((1, SIZE, SIZE + 1, 3), np.uint8),  # wrong size
    np.zeros((SIZE, SIZE, 3), np.uint8),  # no batch axis
    np.zeros((1, SIZE, SIZE, 4), np.uint8),  # BGRA
], ids=["float32", "width", "no-batch", "4-channels"])
def test_backend_rejects_wrong_input(backend, images):
    with pytest.raises(ValueError, match=f"expected uint8 N x {SIZE} x {SIZE} x 3"):
        backend.infer(images)


def test_onnx_without_dfr_metadata_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["out"])], "plain",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("out", TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "plain.onnx"
    onnx.save_model(model, path)
    with pytest.raises(ManifestError, match="dfr-export"):
        load_backend(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dfr-export"):
        load_backend(tmp_path / "nothing.onnx")


def test_unknown_model_file_type(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("not a model")
    with pytest.raises(ValueError, match="unsupported model file type '.txt'"):
        load_backend(path)


@pytest.mark.parametrize("provider", ["tensorrt", "cuda"])
def test_unavailable_provider_names_the_available_ones(tiny_onnx, provider):
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider_list(provider, cache_dir=None, height=SIZE, width=SIZE, max_batch=1)[0][0] in available:
        pytest.skip(f"this onnxruntime has the {provider} provider")
    with pytest.raises(RuntimeError) as info:
        load_backend(tiny_onnx, provider=provider)
    message = str(info.value)
    assert repr(provider) in message
    assert "CPUExecutionProvider" in message
    assert all(name in message for name in available)


def test_provider_list_tensorrt_with_caches(tmp_path):
    chain = provider_list("tensorrt", cache_dir=tmp_path, height=256, width=256, max_batch=8)
    assert [p if isinstance(p, str) else p[0] for p in chain] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = chain[0][1]
    assert trt["trt_engine_cache_enable"] is True
    assert trt["trt_engine_cache_path"] == str(tmp_path)
    assert trt["trt_timing_cache_enable"] is True
    assert trt["trt_timing_cache_path"] == str(tmp_path)
    assert trt["trt_profile_min_shapes"] == "image:1x256x256x3"
    assert trt["trt_profile_opt_shapes"] == "image:1x256x256x3"
    assert trt["trt_profile_max_shapes"] == "image:8x256x256x3"
    assert trt["device_id"] == 0 and chain[1][1] == {"device_id": 0}


def test_provider_list_other_providers():
    no_cache = provider_list("tensorrt", cache_dir=None, height=32, width=48, max_batch=2, device_id=1)
    assert not any(key.startswith(("trt_engine", "trt_timing")) for key in no_cache[0][1])
    assert no_cache[0][1]["trt_profile_max_shapes"] == "image:2x32x48x3"
    assert no_cache[1] == ("CUDAExecutionProvider", {"device_id": 1})
    assert provider_list("cuda", cache_dir=None, height=32, width=32, max_batch=1) == [
        ("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert provider_list("cpu", cache_dir=None, height=32, width=32, max_batch=1) == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="unknown provider 'gpu'"):
        provider_list("gpu", cache_dir=None, height=32, width=32, max_batch=1)


# --- Detector -------------------------------------------------------------------------------------

def test_detect_frames_of_any_size(backend, photo):
    from dfr_edge.data.images import resize_image

    rng = np.random.default_rng(0)
    wide = cv2.resize(photo, (300, 200), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(photo, (61, 97), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(cv2.resize(photo, (150, 90)), cv2.COLOR_BGR2GRAY)
    bgra = np.dstack([cv2.resize(photo, (80, 120)), rng.integers(0, 256, (120, 80), dtype=np.uint8)])
    exact = cv2.resize(photo, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    frames = [wide, small, grey, bgra, exact]
    detector = Detector(backend)
    detections = detector.detect(frames)
    assert len(detections) == len(frames)

    as_colour = [wide, small, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), bgra[:, :, :3], exact]
    maps, scores = backend.infer(np.stack([resize_image(f, SIZE, SIZE) for f in as_colour]))
    for frame, detection, amap, score in zip(frames, detections, maps, scores):
        assert detection.anomaly_map.shape == frame.shape[:2]
        assert detection.anomaly_map.dtype == np.float32
        assert detection.mask.shape == frame.shape[:2] and detection.mask.dtype == bool
        assert detection.score == pytest.approx(float(score), rel=1e-6)
        # resampling the map interpolates: it stays within the model-size map's range
        assert amap.min() - 1e-4 <= detection.anomaly_map.min() <= detection.anomaly_map.max() <= amap.max() + 1e-4
        for box in detection.boxes:
            assert 0 <= box.x and box.x + box.width <= frame.shape[1]
            assert 0 <= box.y and box.y + box.height <= frame.shape[0]
    np.testing.assert_array_equal(detections[-1].anomaly_map, maps[-1])  # model-size frame: map as is
    assert len({d.score for d in detections}) > 1


def test_grey_and_bgra_frames_equal_their_bgr_versions(backend, photo):
    grey = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    colour = (photo * np.array([1.0, 0.7, 0.35])).astype(np.uint8)  # the test images are grey
    bgra = cv2.cvtColor(colour, cv2.COLOR_BGR2BGRA)
    bgra[:, :, 3] = 7  # alpha must not matter
    detector = Detector(backend)
    from_grey, from_grey_1ch, from_bgr_grey, from_bgra, from_bgr, from_rgb = detector.detect(
        [grey, grey[:, :, None], cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), bgra, colour, colour[:, :, ::-1]])
    assert from_grey.score == from_grey_1ch.score == pytest.approx(from_bgr_grey.score, rel=1e-6)
    np.testing.assert_allclose(from_grey.anomaly_map, from_bgr_grey.anomaly_map, rtol=1e-5, atol=1e-5)
    assert from_bgra.score == pytest.approx(from_bgr.score, rel=1e-6)
    np.testing.assert_allclose(from_bgra.anomaly_map, from_bgr.anomaly_map, rtol=1e-5, atol=1e-5)
    assert from_rgb.score != pytest.approx(from_bgr.score, rel=1e-3)  # channel order matters to the model


@pytest.mark.parametrize("frame", [
    np.zeros((40, 40, 3), np.float32),
    np.zeros((40, 40, 3), np.uint16),
    np.zeros((40, 40, 2), np.uint8),
], ids=["float32", "uint16", "2-channels"])
def test_detect_rejects_bad_frames(backend, frame):
    with pytest.raises(ValueError, match="frames must be"):
        Detector(backend).detect([frame])


def test_thresholds_default_to_the_manifest(backend, photo, test_images):
    detector = load_detector(backend.path)
    thresholds = backend.manifest["thresholds"]
    assert detector.pixel_threshold == thresholds["pixel"]
    assert detector.image_threshold == thresholds["image"]
    detections = detector.detect([photo, *test_images])
    for detection in detections:
        assert detection.anomalous == (detection.score > thresholds["image"])
        np.testing.assert_array_equal(detection.mask, detection.anomaly_map > thresholds["pixel"])
    assert any(d.boxes for d in detections)  # the defaults find something on the defective images
    for detection in detections[1:]:  # frames at the model size: the boxes are the mask's regions exactly
        assert detection.boxes == defect_boxes(detection.mask, detection.anomaly_map)
    # a 128 px frame: boxes found on the 64 px map, scaled; the upsampled mask lies within one map pixel
    # of them and has about their area
    big = detections[0]
    assert big.boxes and sum(b.area for b in big.boxes) == pytest.approx(big.mask.sum(), rel=0.2)
    covered = np.zeros_like(big.mask)
    for b in big.boxes:
        covered[max(0, b.y - 2) : b.y + b.height + 2, max(0, b.x - 2) : b.x + b.width + 2] = True
        assert big.mask[b.y : b.y + b.height, b.x : b.x + b.width].any()
    assert not (big.mask & ~covered).any()


def test_threshold_overrides(backend, photo, test_images):
    frames = [photo, *test_images]
    for detection in load_detector(backend.path, pixel_threshold=1e30).detect(frames):
        assert not detection.mask.any() and detection.boxes == []
    assert all(d.anomalous for d in load_detector(backend.path, image_threshold=-1e30).detect(frames))
    assert not any(d.anomalous for d in Detector(backend, image_threshold=1e30).detect(frames))
    # pixel threshold below every score: the whole frame is one region with the map's peak
    everything = Detector(backend, pixel_threshold=-1e30).detect([photo])[0]
    assert everything.mask.all()
    assert everything.boxes == [Box(0, 0, photo.shape[1], photo.shape[0], photo.shape[0] * photo.shape[1],
                                    float(everything.anomaly_map.max()))]
    # an explicit 0.0 is an override, not "use the default"
    assert Detector(backend, pixel_threshold=0.0, image_threshold=0.0).pixel_threshold == 0.0
    assert Detector(backend, pixel_threshold=0.0, image_threshold=0.0).image_threshold == 0.0


# --- regions and overlays -------------------------------------------------------------------------

def test_defect_boxes_on_hand_made_mask():
    rng = np.random.default_rng(0)
    amap = rng.uniform(0.0, 1.0, (20, 30)).astype(np.float32)
    mask = np.zeros((20, 30), bool)
    mask[1:4, 2:6] = True  # blob A: 3 x 4 = 12 pixels
    amap[2, 3] = 7.0
    mask[10:13, 10:13] = True  # blob B: 3 x 3 plus 2 x 2 touching only at a corner = 13 pixels
    mask[13:15, 13:15] = True
    amap[14, 14] = 9.0
    amap[10, 14] = 50.0  # inside B's box but not in B: not its peak
    amap[0, 29] = 100.0  # outside every region

    boxes = defect_boxes(mask, amap)
    assert boxes == [Box(x=10, y=10, width=5, height=5, area=13, peak=9.0),
                     Box(x=2, y=1, width=4, height=3, area=12, peak=7.0)]
    assert boxes[0].to_dict() == {"x": 10, "y": 10, "width": 5, "height": 5, "area": 13, "peak": 9.0}
    assert all(type(v) is int for v in list(boxes[0].to_dict().values())[:5])
    assert defect_boxes(mask, amap, min_area=13) == boxes[:1]
    assert defect_boxes(mask, amap, min_area=14) == []
    assert defect_boxes(np.zeros_like(mask), amap) == []


def test_defect_boxes_are_the_same_with_16_and_32_bit_labels():
    """Masks too large for 16-bit labels in the worst case use 32-bit ones: same regions either way."""
    rng = np.random.default_rng(1)
    small_map = rng.uniform(0.0, 1.0, (200, 200)).astype(np.float32)
    small_mask = cv2.GaussianBlur(small_map, (0, 0), 4) > 0.52  # blobs of many shapes
    large_map = np.zeros((600, 600), np.float32)  # 300 x 300 possible regions: more than 16 bits
    large_map[:200, :200] = small_map
    large_mask = np.zeros((600, 600), bool)
    large_mask[:200, :200] = small_mask
    boxes = defect_boxes(small_mask, small_map)
    assert len(boxes) > 5 and defect_boxes(large_mask, large_map) == boxes


def test_sampled_boxes_cover_their_map_pixels_in_frame_pixels():
    amap = np.zeros((8, 8), np.float32)
    amap[2:4, 1:4] = 5.0
    amap[6, 6] = 3.0
    sampled = SampledMap(amap, top=10, left=20, scale_y=2.5, scale_x=1.875)  # e.g. 8x8 from a 20x15 ROI
    # columns 1..3 -> 1.875..7.5 -> pixels 1..7; rows 2..3 -> 5..10; area 6 map pixels x 4.69
    assert sampled_boxes(sampled, threshold=1.0) == [Box(21, 15, 7, 5, 28, 5.0), Box(31, 25, 3, 3, 5, 3.0)]
    assert sampled_boxes(sampled, threshold=1.0, min_area=6) == [Box(21, 15, 7, 5, 28, 5.0)]
    assert sampled_boxes(sampled, threshold=5.0) == []


def test_make_overlay_highlights_high_scores():
    frame = np.full((60, 80, 3), 128, np.uint8)
    amap = np.zeros((60, 80), np.float32)
    amap[20:40, 30:50] = 10.0
    mask = amap > 1.0
    out = make_overlay(frame, amap, mask, low=0.0, threshold=1.0)
    assert out.shape == frame.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - frame.astype(int)).sum(axis=2)
    assert diff[25:35, 35:45].min() > 40  # inside the hot region
    assert not np.array_equal(out[30, 40], out[5, 5])  # hot and normal pixels are coloured differently
    white = np.all(out == 255, axis=2)
    assert white.any() and not white[:15].any()  # outline only around the defect
    assert not np.all(make_overlay(frame, amap, np.zeros_like(mask), 0.0, 1.0) == 255, axis=2).any()

    # a model-size map is resampled onto the frame
    small = make_overlay(frame, amap[::4, ::4].copy(), mask[::4, ::4].copy(), low=0.0, threshold=1.0)
    assert small.shape == frame.shape
    assert np.abs(small.astype(int) - frame.astype(int)).sum(axis=2)[25:35, 35:45].min() > 40


def test_detector_overlay_is_frame_sized(backend, photo):
    detector = Detector(backend)
    frame = cv2.resize(photo, (150, 110))
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    for f in (frame, grey):
        detection = detector.detect([f])[0]
        out = detector.overlay(f, detection)
        assert out.shape == (110, 150, 3) and out.dtype == np.uint8
        assert not np.array_equal(out, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR) if f is grey else frame)


def test_non_spinning_session_gives_the_same_output(backend, tiny_onnx, test_images):
    quiet = OnnxRuntimeBackend(tiny_onnx, threads=2, spin=False)
    for got, want in zip(quiet.infer(test_images), backend.infer(test_images)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
