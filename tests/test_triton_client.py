"""The triton backend without a server: URLs, refusal of foreign models, a server that is down."""

from __future__ import annotations

import socket

import pytest

from dfr_edge.runtime.triton.client import (
    TritonAddress,
    TritonServerError,
    TritonUnavailableError,
    _check_io,
    is_triton_url,
    parse_url,
)


def test_urls():
    assert parse_url("triton://gpu-1:9001/line3") == TritonAddress("grpc", "gpu-1", 9001, "line3")
    assert parse_url("triton+http://localhost/dfr/2") == TritonAddress("http", "localhost", 8000, "dfr", "2")
    assert str(parse_url("triton://h/dfr")) == "triton://h:8001/dfr" and parse_url("triton://127.0.0.1/x").is_local
    assert is_triton_url("triton://h/dfr") and not is_triton_url("bundle/model.onnx")
    for bad in ("triton://host", "triton://host/a/b/c", "triton://host/dfr/latest", "http://host/dfr"):
        with pytest.raises(ValueError):
            parse_url(bad)


def served(dims=(64, 64, 3), dtype="TYPE_UINT8", max_batch=8) -> dict:
    return {"max_batch_size": max_batch,
            "input": [{"name": "image", "data_type": dtype, "dims": [str(d) for d in dims]}],
            "output": [{"name": "anomaly_map", "data_type": "TYPE_FP32", "dims": ["64", "64"]},
                       {"name": "score", "data_type": "TYPE_FP32", "dims": ["1"]}]}


def test_only_the_fused_graph_is_accepted():
    address = parse_url("triton://h/dfr")
    _check_io(served(), 64, 64, address)
    for config in (served(dims=(3, 64, 64)), served(dtype="TYPE_FP32"), served(max_batch=0)):
        with pytest.raises(TritonServerError, match="does not serve the dfr-edge fused graph"):
            _check_io(config, 64, 64, address)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_reported_as_unavailable():
    pytest.importorskip("tritonclient.grpc")
    from dfr_edge.runtime import load_detector

    port = free_port()
    with pytest.raises(TritonUnavailableError, match=f"127.0.0.1:{port} is not reachable"):
        load_detector(f"triton://127.0.0.1:{port}/dfr", timeout_s=5)
