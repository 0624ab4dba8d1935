"""dfr-camera: the live loop on real video I/O, fake cameras that drop, signals, a soak and batching."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from dfr_edge.cli.camera import main as camera_main
from dfr_edge.runtime import Detector
from dfr_edge.runtime.camera import (
    CameraConfig,
    CameraOutputs,
    Reconnect,
    SourceSpec,
    csi_pipeline,
    parse_source,
    run_camera,
    v4l2_pipeline,
)
from dfr_edge.runtime.camera.capture import LatestFrame
from dfr_edge.runtime.camera.stats import rss_mb

FRAME_SHAPE = (96, 128, 3)


def write_video(path, frames: int, fps: float = 30.0, seed: int = 0):
    """An mp4v file of noisy frames, each with a bright square whose position encodes its index."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (FRAME_SHAPE[1], FRAME_SHAPE[0]))
    assert writer.isOpened()
    for i in range(frames):
        frame = rng.integers(60, 90, FRAME_SHAPE, dtype=np.uint8)
        frame[10:30, 4 + 4 * i % 100: 24 + 4 * i % 100] = 255
        writer.write(frame)
    writer.release()
    return path


def frames_in(path) -> int:
    """Frames OpenCV can actually decode from a video (what a player would show)."""
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


class FakeBackend:
    """The Backend interface with a fixed cost per call; records every batch it was given."""

    name = "fake"
    path = None
    export_info: dict = {}
    height = width = 32
    max_batch = 16

    def __init__(self, seconds_per_call: float = 0.0):
        self.seconds = seconds_per_call
        self.batches: list[int] = []
        self.manifest = {"thresholds": {"pixel": 0.5, "image": 0.5}, "normal_stats": {"pixel_median": 0.1}}

    def infer(self, images: np.ndarray):
        self.batches.append(len(images))
        if self.seconds:
            time.sleep(self.seconds)
        maps = images[..., 2].astype(np.float32) / 255.0  # red channel as the "anomaly"
        return maps, maps.reshape(len(images), -1).max(axis=1)


class FakeCamera:
    """A cv2.VideoCapture stand-in: `frames` frames (None: endless), each read taking `delay` s."""

    def __init__(self, frames: int | None = None, delay: float = 0.0, opened: bool = True):
        self.left, self.delay, self.opened = frames, delay, opened
        self.image = np.full(FRAME_SHAPE, 80, np.uint8)

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.opened

    def get(self, prop):
        return 0.0

    def read(self):
        if self.delay:
            time.sleep(self.delay)
        if self.left is not None:
            if self.left == 0:
                return False, None
            self.left -= 1
        return True, self.image

    def release(self):
        self.opened = False


def live(name: str = "0") -> SourceSpec:
    return SourceSpec(name, "camera")


# --- sources -------------------------------------------------------------------------------------

def test_parse_source_kinds(tmp_path):
    video = write_video(tmp_path / "a.mp4", 2)
    assert parse_source("0").kind == "camera" and parse_source("0").live
    assert parse_source("rtsp://10.0.0.2/stream").kind == "url"
    assert parse_source("videotestsrc ! appsink").kind == "gstreamer"
    assert parse_source(str(video)).kind == "file" and not parse_source(str(video)).live
    assert parse_source(str(tmp_path)).kind == "folder"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        parse_source(str(tmp_path / "nope.mp4"))


def test_pipelines_keep_only_the_newest_frame():
    csi = csi_pipeline(1, 1280, 720, 60)
    assert csi.startswith("nvarguscamerasrc sensor-id=1 ") and "width=1280, height=720, framerate=60/1" in csi
    usb = v4l2_pipeline("/dev/video2", 640, 480, 30)
    assert usb.startswith("v4l2src device=/dev/video2 ")
    for pipeline in (csi, usb):
        assert pipeline.endswith("appsink drop=true max-buffers=1 sync=false") and "format=BGR" in pipeline


def test_latest_frame_keeps_the_newest_and_counts_the_rest():
    box = LatestFrame()
    for i in range(5):
        box.put(i)
    assert box.take(0.0) == 4 and box.dropped == 4
    assert box.take(0.01) is None and not box.ended
    box.close()
    assert box.ended


# --- the loop on real OpenCV I/O -----------------------------------------------------------------

def test_camera_on_video_file_writes_playable_outputs(tiny_onnx, tmp_path, capsys):
    video = write_video(tmp_path / "line.mp4", 12)
    out = tmp_path / "out"
    code = camera_main([str(tiny_onnx), "--source", str(video), "--headless", "--no-pace", "--every-frame",
                        "--record", str(out / "rec.mp4"), "--events", str(out / "events.jsonl"),
                        "--save-anomalies", str(out / "anomalies"), "--image-threshold", "-1",
                        "--summary", str(out / "summary.json")])
    assert code == 0
    assert "12 frame(s) decided" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # main() put the handlers back
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [e["frame_id"] for e in events] == list(range(12))
    assert all(e["anomalous"] for e in events)  # image threshold -1: every frame is an anomaly
    assert set(events[0]["latency_ms"]) == {"capture_wait", "resize", "infer", "postprocess", "frame_to_decision"}
    assert frames_in(out / "rec.mp4") == 12
    capture = cv2.VideoCapture(str(out / "rec.mp4"))
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (128, 96)
    saved = sorted(p.name for p in (out / "anomalies").iterdir())
    assert len(saved) == 36 and "src0-00000011_mask.png" in saved
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_out"] == 12 and summary["dropped"] == 0
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_bundle_folder_runs_its_best_exported_model(tiny_onnx, tmp_path, capsys):
    video = write_video(tmp_path / "line.mp4", 3)
    assert camera_main([str(tiny_onnx.parent), "--source", str(video), "--headless", "--every-frame",
                        "--threads", "1"]) == 0
    assert "3 frame(s) decided" in capsys.readouterr().out


def test_existing_outputs_are_not_overwritten(tiny_onnx, tmp_path, capsys):
    video = write_video(tmp_path / "line.mp4", 2)
    (tmp_path / "events.jsonl").write_text("keep me\n")
    code = camera_main([str(tiny_onnx), "--source", str(video), "--headless", "--events",
                        str(tmp_path / "events.jsonl")])
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert (tmp_path / "events.jsonl").read_text() == "keep me\n"
    (tmp_path / "anomalies").mkdir()
    (tmp_path / "anomalies" / "src0-00000000.png").write_bytes(b"an earlier run's image")
    code = camera_main([str(tiny_onnx), "--source", str(video), "--headless", "--save-anomalies",
                        str(tmp_path / "anomalies")])
    assert code == 2 and "is not empty" in capsys.readouterr().err
    assert (tmp_path / "anomalies" / "src0-00000000.png").read_bytes() == b"an earlier run's image"


def test_bad_source_and_backend_are_usage_errors(tiny_onnx, tmp_path, capsys):
    assert camera_main([str(tiny_onnx), "--source", str(tmp_path / "missing.mp4"), "--headless"]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    assert camera_main([str(tiny_onnx), "--headless"]) == 2
    assert "no source given" in capsys.readouterr().err
    video = write_video(tmp_path / "line.mp4", 2)
    assert camera_main([str(tiny_onnx), "--source", str(video), "--headless", "--backend", "openvino"]) == 2
    assert "unknown backend 'openvino'" in capsys.readouterr().err


def test_window_without_gui_support_says_use_headless(tiny_onnx, tmp_path, capsys):
    video = write_video(tmp_path / "line.mp4", 2)
    try:
        cv2.namedWindow("probe")
        cv2.destroyWindow("probe")
        pytest.skip("this OpenCV can open windows")
    except cv2.error:
        pass
    assert camera_main([str(tiny_onnx), "--source", str(video), "--events", str(tmp_path / "e.jsonl")]) == 2
    assert "pass --headless" in capsys.readouterr().err
    assert not (tmp_path / "e.jsonl").exists()  # nothing created that a rerun would refuse to overwrite


def test_sigterm_mid_run_leaves_complete_outputs(tiny_onnx, tmp_path):
    video = write_video(tmp_path / "long.mp4", 300)  # 10 s at its own 30 fps: still running when stopped
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "dfr_edge.cli.camera", str(tiny_onnx), "--source", str(video),
                             "--headless", "--record", str(out / "rec.mp4"), "--events", str(out / "ev.jsonl")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (out / "ev.jsonl").exists() and len((out / "ev.jsonl").read_text().splitlines()) >= 5:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "SIGTERM: stopping" in stderr
    text = (out / "ev.jsonl").read_text()
    assert text.endswith("\n")
    events = [json.loads(line) for line in text.splitlines()]
    assert 5 <= len(events) < 300
    assert frames_in(out / "rec.mp4") == len(events)


# --- live sources: reconnect, soak, batching -----------------------------------------------------

def test_dropped_source_reconnects_with_backoff(caplog):
    cameras = iter([FakeCamera(frames=4), FakeCamera(opened=False), FakeCamera(opened=False), FakeCamera()])
    opened = []

    def opener(spec):
        opened.append(time.perf_counter())
        return next(cameras)

    config = CameraConfig(max_frames=8, reconnect=Reconnect(first_delay=0.02, max_delay=0.05))
    with caplog.at_level(logging.WARNING, logger="dfr_edge.runtime.camera"):
        summary = run_camera(Detector(FakeBackend()), [live()], config, opener=opener)
    assert summary["frames_out"] == 8 and summary["sources"][0]["reconnects"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum("dropped; reconnecting" in m for m in messages) == 3 and "source 0 reconnected" in messages
    pauses = np.diff(opened)
    assert pauses[1] >= 0.04 and pauses[2] >= 0.05  # backoff doubled (capped at max_delay)


def test_live_source_that_never_comes_back_ends_after_max_attempts():
    cameras = iter([FakeCamera(frames=2)] + [FakeCamera(opened=False)] * 3)
    config = CameraConfig(every_frame=True, reconnect=Reconnect(first_delay=0.001, max_delay=0.001, max_attempts=3))
    summary = run_camera(Detector(FakeBackend()), [live()], config, opener=lambda spec: next(cameras))
    assert summary["frames_out"] == 2 and summary["sources"][0]["reconnects"] == 0


def test_soak_source_faster_than_model_has_no_backlog():
    """2,500 decisions on an endless camera reading every 0.1 ms and a 0.5 ms model."""
    backend = FakeBackend(seconds_per_call=0.0005)
    latencies, memory = [], []

    def on_detection(event, frame, detection):
        latencies.append(event.latency_ms["frame_to_decision"])
        if event.frame_id and len(latencies) % 500 == 0:
            memory.append(rss_mb())

    summary = run_camera(Detector(backend), [live()], CameraConfig(max_frames=2500),
                         on_detection=on_detection, opener=lambda spec: FakeCamera(delay=0.0001))
    assert summary["frames_out"] == 2500 and len(latencies) == 2500
    assert summary["dropped"] > 0 and summary["frames_in"] > summary["frames_out"]
    start, end = np.percentile(latencies[:500], 99), np.percentile(latencies[-500:], 99)
    assert end < max(3 * start, 50.0)  # a backlog would grow to seconds
    assert max(memory) - memory[0] < 20.0


def test_sources_are_batched_one_inference_per_round():
    backend = FakeBackend(seconds_per_call=0.002)
    seen = []
    summary = run_camera(Detector(backend), [live("0"), live("1"), live("2")], CameraConfig(max_frames=30),
                         on_detection=lambda event, frame, d: seen.append(event.source_index),
                         opener=lambda spec: FakeCamera(delay=0.0005))
    assert backend.batches == [3] * 10
    assert summary["rounds"] == 10 and sorted(seen) == [0] * 10 + [1] * 10 + [2] * 10


def test_two_rounds_in_flight_overlap_one_inference_at_a_time_in_order():
    running = {"infer": 0, "detect": 0}
    most = {"infer": 0, "detect": 0}
    lock = threading.Lock()

    def counted(what, call):
        with lock:
            running[what] += 1
            most[what] = max(most[what], running[what])
        try:
            return call()
        finally:
            with lock:
                running[what] -= 1

    class CountingBackend(FakeBackend):
        def infer(self, images):
            return counted("infer", lambda: super(CountingBackend, self).infer(images))

    class SlowPostprocessing(Detector):
        def detect(self, frames, timings=None):
            def slow():
                detections = super(SlowPostprocessing, self).detect(frames, timings)
                time.sleep(0.004)  # host work the other round's inference can hide
                return detections

            return counted("detect", slow)

    ids = []
    summary = run_camera(SlowPostprocessing(CountingBackend(seconds_per_call=0.005)), [live()],
                         CameraConfig(max_frames=40, in_flight=2),
                         on_detection=lambda event, frame, d: ids.append(event.frame_id),
                         opener=lambda spec: FakeCamera(delay=0.001))
    assert summary["in_flight"] == 2 and summary["frames_out"] == 40
    assert most == {"infer": 1, "detect": 2}  # rounds overlap, inferences never do
    assert ids == sorted(ids) and len(set(ids)) == 40


@pytest.mark.parametrize("name, threads_in_loop", [("onnxruntime:CPUExecutionProvider", 1),
                                                    ("onnxruntime:CUDAExecutionProvider", 3)])
def test_opencv_runs_single_threaded_while_a_cpu_engine_holds_the_cores(name, threads_in_loop):
    backend = FakeBackend()
    backend.name = name
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        seen = []
        run_camera(Detector(backend), [live()], CameraConfig(max_frames=3),
                   on_detection=lambda event, frame, d: seen.append(cv2.getNumThreads()),
                   opener=lambda spec: FakeCamera())
        assert seen == [threads_in_loop] * 3 and cv2.getNumThreads() == 3  # restored afterwards
    finally:
        cv2.setNumThreads(before)


def test_failing_callback_is_counted_not_fatal():
    def on_detection(event, frame, detection):
        raise ConnectionError("PLC unreachable")

    summary = run_camera(Detector(FakeBackend()), [live()], CameraConfig(max_frames=5),
                         on_detection=on_detection, opener=lambda spec: FakeCamera())
    assert summary["frames_out"] == 5 and summary["callback_errors"] == 5


def test_stop_event_ends_the_loop_and_closes_outputs(tmp_path):
    stop = threading.Event()
    count = []

    def on_detection(event, frame, detection):
        count.append(1)
        if len(count) == 3:
            stop.set()

    summary = run_camera(Detector(FakeBackend()), [live()], CameraConfig(),
                         CameraOutputs(record=tmp_path / "r.mp4", events=tmp_path / "e.jsonl"),
                         on_detection=on_detection, stop=stop, opener=lambda spec: FakeCamera(delay=0.001))
    assert summary["frames_out"] == 3
    assert frames_in(tmp_path / "r.mp4") == 3
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 3


def test_plc_hook_example_posts_events_over_http(tiny_onnx, tmp_path):
    import importlib.util
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from pathlib import Path

    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = Path(__file__).resolve().parent.parent / "examples" / "plc_hook.py"
    spec = importlib.util.spec_from_file_location("plc_hook", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    video = write_video(tmp_path / "line.mp4", 4)
    try:
        assert example.main([str(tiny_onnx), "--source", str(video), "--http",
                             f"http://127.0.0.1:{server.server_port}/dfr", "--all"]) == 0
    finally:
        server.shutdown()
    assert 1 <= len(received) <= 4  # a paced file: a busy machine may drop a frame
    assert {"timestamp", "source", "frame_id", "score", "anomalous", "boxes", "latency_ms"} <= set(received[0])


def test_camera_imports_without_torch():
    code = ("import sys, dfr_edge.runtime.camera, dfr_edge.runtime.camera.engine_choice, dfr_edge.cli.camera; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
