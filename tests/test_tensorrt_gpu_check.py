"""The CPU-testable parts of benchmarks/gpu_check.py (the script itself needs an NVIDIA GPU)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def reference(seed: int = 0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((6, 16, 16), bool)
    masks[3:, 4:8, 4:8] = True
    maps = rng.random((6, 16, 16)).astype(np.float32) + masks * 2
    scores = maps.reshape(6, -1).max(axis=1)
    from dfr_edge.metrics import compute_metrics

    return (maps, scores, compute_metrics(maps, scores, masks).to_dict()), masks


def test_outputs_within_tolerance_pass(gpu_check):
    ref, masks = reference()
    check = gpu_check.compare("fp16", ref, ref[0] + 1e-3, ref[1] + 1e-3, masks, gpu_check.Check("x", "fp16"))
    assert check.status == "ok" and check.map_rel_error < 1e-3 and check.metric_deltas["image_auroc"] == 0


@pytest.mark.parametrize("damage, reason", [("shift", "map error"), ("nan", "NaN"), ("swap", "metric delta")])
def test_mismatches_are_reported(gpu_check, damage, reason):
    ref, masks = reference()
    maps, scores = ref[0].copy(), ref[1].copy()
    if damage == "shift":
        maps[0] += 0.5
    elif damage == "nan":
        maps[1, 0, 0] = np.nan
    else:  # good and defective images swapped: same values, worse metrics
        maps, scores = maps[::-1].copy(), scores[::-1].copy()
    check = gpu_check.compare("int8", ref, maps, scores, masks, gpu_check.Check("x", "int8"))
    assert check.status == "mismatch" and reason in check.reason


def test_latency_stats(gpu_check):
    stats = gpu_check.latency_stats([1.0] * 98 + [5.0, 9.0], [0.5] * 100, batch=4)
    assert stats["p50_ms"] == 1.0 and stats["p99_ms"] > 5 and stats["images_per_s"] == 4000.0
    assert stats["gpu_p50_ms"] == 0.5


def test_report_fails_loudly_and_writes_json(gpu_check, tmp_path, capsys):
    args = argparse.Namespace(large_batch=64, out=tmp_path / "report.json")
    good = gpu_check.Check("torch-cuda", "fp32", timings={"b1": {"p50_ms": 0.9, "p99_ms": 1.2}})
    bad = gpu_check.Check("tensorrt-int8", "int8", status="failed", reason="RuntimeError: boom")
    assert gpu_check.report(args, {"gpu": "NVIDIA H200"}, [good]) == 0
    assert gpu_check.report(args, {"gpu": "NVIDIA H200"}, [good, bad]) == 1
    captured = capsys.readouterr()
    assert "FAILED tensorrt-int8: RuntimeError: boom" in captured.err and "torch-cuda" in captured.out
    saved = json.loads(args.out.read_text())
    assert [c["status"] for c in saved["checks"]] == ["ok", "failed"] and saved["tolerances"]["map"]["fp32"] == 1e-3
    assert gpu_check.report(args, {}, []) == 1  # nothing ran: not a pass


def test_backends_follow_what_is_installed(gpu_check, tiny_onnx):
    bundle = tiny_onnx.parent
    none = {"torch_cuda": False, "ort_cuda": False, "tensorrt": None, "cuda_binding": None}
    assert gpu_check.backends(bundle, none, 64) == []
    everything = {"torch_cuda": True, "ort_cuda": True, "tensorrt": "10.3.0", "cuda_binding": "cuda-python"}
    labels = [label for label, _, _ in gpu_check.backends(bundle, everything, 64)]
    assert "torch-cuda-fp16+graphs" in labels and "ort-cuda-fp16" in labels
    assert {"tensorrt-fp32", "tensorrt-fp16+graphs", "tensorrt-int8", "tensorrt-int8+graphs"} <= set(labels)


def test_without_a_gpu_it_says_so(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "probe", lambda: {"torch_cuda": False, "ort_cuda": False, "tensorrt": None,
                                                     "cuda_binding": None})
    assert gpu_check.main(["--data", "nowhere"]) == 2
    assert "no usable NVIDIA GPU" in capsys.readouterr().err
