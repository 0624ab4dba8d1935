"""dfr-serve (a real Triton server through PyTriton) against the triton backend, on free local ports.

PyTriton needs numpy < 2, so the server usually runs from its own venv: set DFR_SERVE_PYTHON to that
venv's python (`pip install -e '.[serve]'` there). The client side runs here, in the test's Python.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dfr_edge.runtime import load_detector
from dfr_edge.runtime.triton.client import TritonServerError, TritonUnavailableError
from dfr_edge.serve import ServeProcess

pytestmark = pytest.mark.serve


def serve_python() -> str | None:
    explicit = os.environ.get("DFR_SERVE_PYTHON")
    if explicit:
        return explicit
    return sys.executable if importlib.util.find_spec("pytriton") else None


def start_server(model: Path, log: Path, *extra: str, ports: tuple[int, int, int] | None = None) -> ServeProcess:
    python = serve_python()
    if python is None:
        pytest.skip("pytriton is not importable: set DFR_SERVE_PYTHON to a python with dfr-edge[serve]")
    try:
        return ServeProcess(python, model, log, "--threads", "1", *extra, ports=ports)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def server(tiny_onnx, tmp_path_factory):
    # A long queue delay makes concurrent requests meet in one batch even on a busy 2-core machine.
    process = start_server(tiny_onnx, tmp_path_factory.mktemp("serve") / "serve.log", "--queue-delay-us", "50000")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (11, 64, 64, 3), dtype=np.uint8)  # 11 > max batch 8


@pytest.mark.parametrize("protocol,shared_memory", [("grpc", True), ("grpc", False), ("http", False)])
def test_remote_equals_local_bit_for_bit(server, tiny_onnx, frames, protocol, shared_memory):
    if protocol == "http":
        pytest.importorskip("geventhttpclient")
    remote = load_detector(server.url(protocol), shared_memory=shared_memory)
    local = load_detector(tiny_onnx)
    assert (remote.pixel_threshold, remote.image_threshold, remote.size) == \
        (local.pixel_threshold, local.image_threshold, local.size)
    (rmap, rscore), (lmap, lscore) = remote.infer(frames), local.infer(frames)
    assert np.array_equal(rmap, lmap) and np.array_equal(rscore, lscore) and rscore.shape == (11,)
    frame = np.random.default_rng(4).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    r, l = remote.detect([frame])[0], local.detect([frame])[0]
    assert (r.score, r.anomalous, r.boxes) == (l.score, l.anomalous, l.boxes)
    remote.backend.close()


def test_concurrent_clients_are_batched(server, frames):
    import tritonclient.grpc as grpcclient

    def client(index: int) -> None:
        detector = load_detector(server.url())
        for i in range(4):
            detector.infer(frames[(index + i) % len(frames)][None])
        detector.backend.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}").get_inference_statistics("dfr", as_json=True)
    sizes = {int(b["batch_size"]) for b in stats["model_stats"][0]["batch_stats"]}
    assert max(sizes) > 1, f"no batch larger than 1 formed: {sizes}"


def test_bad_requests_are_refused_and_the_server_keeps_serving(server, frames):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")

    def request(array: np.ndarray, dtype: str):
        tensor = grpcclient.InferInput("image", list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        return client.infer("dfr", [tensor])

    for array, dtype, expected in [(frames[:1].astype(np.float32), "FP32", "data-type"),
                                   (np.zeros((1, 32, 32, 3), np.uint8), "UINT8", "shape"),
                                   (np.zeros((9, 64, 64, 3), np.uint8), "UINT8", "batch")]:
        with pytest.raises(InferenceServerException, match=expected):
            request(array, dtype)
    assert request(frames[:2], "UINT8").as_numpy("score").shape == (2, 1)
    with pytest.raises(TritonServerError, match="'nope' is not ready"):
        load_detector(f"triton://127.0.0.1:{server.grpc}/nope")


def test_server_stopped_mid_run_is_reported_and_the_client_resumes_when_it_is_back(tiny_onnx, frames, tmp_path):
    log = tmp_path / "serve.log"
    process = start_server(tiny_onnx, log)
    try:
        detector = load_detector(process.url(), timeout_s=10)  # local: shared memory regions registered
        expected = detector.infer(frames[:2])
    finally:
        process.stop()
    with pytest.raises(TritonUnavailableError, match="not reachable"):
        detector.infer(frames[:2])
    process = start_server(tiny_onnx, log, ports=(process.http, process.grpc, process.metrics))
    try:
        for _ in range(30):  # what a camera loop does: retry while the channel reconnects
            try:
                again = detector.infer(frames[:2])
                break
            except TritonUnavailableError:
                time.sleep(1)
        assert np.array_equal(again[0], expected[0]) and np.array_equal(again[1], expected[1])
    finally:
        process.stop()


def test_dfr_infer_takes_a_server_url(server, tiny_onnx, tiny_data, tmp_path):
    import json

    from dfr_edge.cli.infer import main

    images = str(tiny_data / "test" / "good")
    for model, out in ((server.url(), tmp_path / "remote"), (str(tiny_onnx), tmp_path / "local")):
        assert main([model, images, "--out", str(out), "--no-images"]) == 0
    remote, local = ([json.loads(line) for line in (d / "results.jsonl").read_text().splitlines()]
                     for d in (tmp_path / "remote", tmp_path / "local"))
    assert len(remote) == 4 and remote == local


def test_local_server_without_shared_memory_falls_back_to_the_socket(server, frames, monkeypatch):
    from dfr_edge.runtime.triton import client

    def refuse(*_args, **_kwargs):
        raise TritonServerError("the server refused to register shared memory")  # a container without --ipc=host

    monkeypatch.setattr(client._SharedMemory, "__init__", refuse)
    detector = load_detector(server.url())
    assert "shared memory" not in detector.backend.name
    assert detector.infer(frames[:2])[0].shape == (2, 64, 64)
    with pytest.raises(TritonServerError, match="refused to register"):
        load_detector(server.url(), shared_memory=True)
