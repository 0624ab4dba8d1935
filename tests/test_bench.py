"""dfr-bench: the JSON schema, the Markdown and PNG outputs, interleaving, and bad input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dfr_edge.bench import SCHEMA, Plan, measure
from dfr_edge.bench.targets import Target
from dfr_edge.cli.bench import main as bench_main
from dfr_edge.runtime import Detector

SIZE = 64  # tests/conftest.py TINY_SIZE


@pytest.fixture(scope="module")
def bench_run(tiny_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = bench_main([str(tiny_onnx.parent), "--batch", "1,2", "--iterations", "4", "--warmup", "1",
                       "--frame-size", "96x72", "--json", str(out / "b.json"), "--markdown", str(out / "b.md"),
                       "--plot", str(out / "b.png")])
    assert code == 0
    return out


def test_bench_json_schema(bench_run, tiny_onnx):
    data = json.loads((bench_run / "b.json").read_text())
    assert data["schema"] == SCHEMA
    env = data["environment"]
    assert {"cpu", "cores", "usable_cores", "gpus", "packages", "thread_variables", "jetson_power_mode"} <= set(env)
    assert "onnxruntime" in env["packages"] and "torch" in env["packages"]
    assert data["plan"]["batches"] == [1, 2] and data["plan"]["frame_size"] == [72, 96]
    assert [t["label"] for t in data["targets"]] == ["fp32 onnxruntime:cpu", "torch-eager"]
    assert data["targets"][0]["artefact"] == str(tiny_onnx) and data["targets"][1]["baseline"]
    results = data["results"]
    assert [(r["batch"], r["view"]) for r in results[::2]] == [(1, "model"), (1, "frame"), (2, "model"), (2, "frame")]
    for r in results:
        lat = r["latency_ms"]
        assert lat["count"] == 4 == len(r["samples_ms"])
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["images_per_s"] == pytest.approx(1000.0 * r["batch"] / lat["p50"])
        assert r["per_image_ms"] == pytest.approx(lat["p50"] / r["batch"])
        assert set(r["stages_ms"]) == ({"resize", "infer", "postprocess"} if r["view"] == "frame" else set())
        base = next(b for b in results if b["baseline"] and (b["view"], b["batch"]) == (r["view"], r["batch"]))
        assert r["vs_baseline"] == pytest.approx(base["latency_ms"]["p50"] / lat["p50"])
    assert all(r["vs_baseline"] == 1.0 for r in results if r["baseline"])


def test_bench_markdown_and_plot(bench_run):
    text = (bench_run / "b.md").read_text()
    assert "### model only" in text and "### frame to decision" in text
    assert text.count("| fp32 onnxruntime:cpu |") == 4 and "| resize p50 ms |" in text
    png = (bench_run / "b.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[0] > 300 and image.shape[1] > 800 and image.std() > 10


class OrderBackend:
    """Records the order in which targets are called; nothing else."""

    export_info: dict = {}
    path = None
    height = width = 8
    max_batch = 16
    manifest = {"thresholds": {"pixel": 1.0, "image": 1.0}, "normal_stats": {"pixel_median": 0.0}}

    def __init__(self, name: str, log: list[str]):
        self.name, self.log = name, log

    def infer(self, images):
        self.log.append(self.name)
        return np.zeros(images.shape[:3], np.float32), np.zeros(len(images), np.float32)


def test_targets_are_interleaved_round_robin():
    log: list[str] = []
    targets = [Target(n, n, n, "fake", None, Detector(OrderBackend(n, log))) for n in "abc"]
    cells = measure(targets, Plan(batches=(2,), views=("model",), warmup=1, block=1, settle=0, iterations=3),
                    [np.zeros((8, 8, 3), np.uint8)])
    assert log == list("abc") + list("abc") + list("bca") + list("cab")  # warm-up, then rotating rounds
    assert [len(c.calls) for c in cells] == [3, 3, 3]


def test_targets_take_turns_in_blocks_after_settling():
    log: list[str] = []
    targets = [Target(n, n, n, "fake", None, Detector(OrderBackend(n, log))) for n in "ab"]
    cells = measure(targets, Plan(batches=(1,), views=("model",), warmup=0, block=3, settle=1, iterations=5),
                    [np.zeros((8, 8, 3), np.uint8)])
    # turns of 1 untimed + 3 timed calls, the last turn cut to the 2 calls still missing, rotating who starts
    assert "".join(log) == "aaaa" "bbbb" + "bbb" "aaa"
    assert [len(c.calls) for c in cells] == [5, 5]


def test_every_cell_takes_turns_in_every_round():
    """Cells are not timed one after the other: a slow minute must not land in one cell only."""
    log: list[str] = []

    class SizedOrderBackend(OrderBackend):
        def infer(self, images):
            self.log.append(f"{self.name}{len(images)}")
            return np.zeros(images.shape[:3], np.float32), np.zeros(len(images), np.float32)

    targets = [Target(n, n, n, "fake", None, Detector(SizedOrderBackend(n, log))) for n in "ab"]
    cells = measure(targets, Plan(batches=(1, 2), views=("model",), warmup=0, block=1, settle=0, iterations=2),
                    [np.zeros((8, 8, 3), np.uint8)])
    assert log == ["a1", "b1", "a2", "b2"] + ["b1", "a2", "b2", "a1"]  # two rounds over all cells, rotated
    assert [(c.target.label, c.batch, len(c.calls)) for c in cells] == [("a", 1, 2), ("b", 1, 2), ("a", 2, 2),
                                                                         ("b", 2, 2)]


def test_bench_bad_input_is_a_usage_error(tmp_path, tiny_onnx, capsys):
    assert bench_main([str(tmp_path / "nothing.onnx")]) == 2
    assert "nothing.onnx does not exist" in capsys.readouterr().err
    assert bench_main([str(tmp_path)]) == 2
    assert "holds no exported .onnx file" in capsys.readouterr().err
    assert bench_main([str(tiny_onnx), "--views", "camera"]) == 2
    assert "--views" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_main([str(tiny_onnx), "--batch", "0"])


def test_gpu_time_from_cuda_events_is_kept_as_a_stage():
    class GpuTimedBackend(OrderBackend):
        def infer(self, images):
            self.last_gpu_ms = 1.5 * len(images)
            return super().infer(images)

    target = Target("gpu", "gpu", "fp16", "tensorrt", 1, Detector(GpuTimedBackend("gpu", [])))
    cells = measure([target], Plan(batches=(2,), warmup=0, iterations=3), [np.zeros((8, 8, 3), np.uint8)])
    assert [c.view for c in cells] == ["model", "frame"]
    for cell in cells:
        assert cell.stages["gpu"] == pytest.approx([0.003] * 3)
