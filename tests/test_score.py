"""The image score rule of the head: what it computes, how it is written, and that it exports as it runs."""

from __future__ import annotations

import io
import json
import shutil
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from dfr_edge.config import TrainConfig
from dfr_edge.export.trt_lint import lint_for_tensorrt
from dfr_edge.model import AnomalyHead, ScoreRule

RULES = ["max", "topk:1", "topk:37", "quantile:0.99", "quantile:0.5"]


def numpy_score(maps: np.ndarray, rule: str) -> np.ndarray:
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    name, _, arg = rule.partition(":")
    if name == "max":
        return flat.max(axis=1)
    if name == "topk":
        return np.sort(flat, axis=1)[:, -int(arg):].mean(axis=1)
    return np.quantile(flat, float(arg), axis=1, method="higher")


def head_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(3, 6, 8, 8, generator=generator), torch.randn(3, 6, 8, 8, generator=generator)


@pytest.mark.parametrize("rule", RULES)
def test_score_rule_matches_numpy(rule):
    amap, score = AnomalyHead((32, 32), channels=6, sigma=1.0, score=rule)(*head_inputs())
    np.testing.assert_allclose(score.numpy(), numpy_score(amap.numpy(), rule), rtol=1e-5)


def test_rules_differ_on_a_map_with_one_hot_pixel():
    amap = torch.zeros(1, 10, 10)
    amap[0, 3, 4] = 100.0
    heads = {rule: AnomalyHead((10, 10), 1, score=rule) for rule in ("max", "topk:4", "quantile:0.9")}
    assert [float(h.image_score(amap)) for h in heads.values()] == [100.0, 25.0, 0.0]


@pytest.mark.parametrize("text", ["max", "topk:100", "quantile:0.99", " topk:5 "])
def test_rule_round_trips_through_its_text(text):
    assert str(ScoreRule.parse(text)) == text.strip()
    assert TrainConfig(score=text).score == text.strip()


@pytest.mark.parametrize("bad", ["mean", "topk", "topk:0", "topk:2.5", "quantile:1", "quantile:x", "max:3", ""])
def test_bad_rules_are_refused_with_the_grammar(bad):
    with pytest.raises(ValueError, match="topk:K"):
        TrainConfig(score=bad)


def test_topk_beyond_tensorrt_limit_or_map_size_is_refused():
    with pytest.raises(ValueError, match="TensorRT"):
        AnomalyHead((256, 256), 1, score="topk:4000")
    with pytest.raises(ValueError, match="at most 64"):
        AnomalyHead((8, 8), 1, score="topk:65")
    with pytest.raises(ValueError, match="higher quantile"):
        AnomalyHead((256, 256), 1, score="quantile:0.5")


class HeadOnly(nn.Module):
    """The head as the fused graph holds it (a submodule named `head`), fed features directly."""

    def __init__(self, head: AnomalyHead):
        super().__init__()
        self.head = head

    def forward(self, features, reconstruction):
        return self.head(features, reconstruction)


@pytest.mark.parametrize("rule", RULES)
def test_onnx_export_of_each_rule_matches_torch_and_passes_tensorrt_lint(rule):
    module = HeadOnly(AnomalyHead((32, 32), channels=6, sigma=2.0, score=rule)).eval()
    features, reconstruction = head_inputs(1)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notes, as in export/onnx_fp32.py
        torch.onnx.export(module, (features[:1], reconstruction[:1]), buffer, dynamo=False, opset_version=17,
                          input_names=["f", "r"], output_names=["anomaly_map", "score"],
                          dynamic_axes={"f": {0: "n"}, "r": {0: "n"}, "anomaly_map": {0: "n"}, "score": {0: "n"}})
    model = onnx.load_from_string(buffer.getvalue())
    assert lint_for_tensorrt(model) == []
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    got_map, got_score = session.run(None, {"f": features.numpy(), "r": reconstruction.numpy()})
    want_map, want_score = module(features, reconstruction)
    np.testing.assert_allclose(got_map, want_map.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_score, want_score.numpy(), rtol=1e-5, atol=1e-6)


def test_bundle_without_score_loads_as_max(tmp_path, tiny_bundle):
    from dfr_edge.bundle import load_bundle

    old = shutil.copytree(tiny_bundle, tmp_path / "old")
    meta = json.loads((old / "dfr.json").read_text())
    assert meta["head"]["score"] == TrainConfig().score
    del meta["head"]["score"]
    (old / "dfr.json").write_text(json.dumps(meta))
    assert load_bundle(old).model.head.score_rule == ScoreRule("max")


@pytest.mark.slow
def test_topk_bundle_exports_every_variant_with_the_rule_in_the_float32_head(tmp_path, tiny_bundle, tiny_data):
    """FP16 and INT8 keep the TopK in the float32 /head/ and the TensorRT lint accepts all of it."""
    from dfr_edge.bundle import load_bundle
    from dfr_edge.export.int8 import FLAVOURS
    from dfr_edge.export.pipeline import ExportOptions, export_bundle

    bundle = shutil.copytree(tiny_bundle, tmp_path / "topk", ignore=shutil.ignore_patterns("*.onnx"))
    meta = json.loads((bundle / "dfr.json").read_text())
    meta["head"]["score"] = "topk:20"
    (bundle / "dfr.json").write_text(json.dumps(meta))
    results = export_bundle(load_bundle(bundle), ExportOptions(fp16=True, int8=True, eval_data=tiny_data))
    ignore = {"fp32": frozenset(), "fp16": frozenset(), **{f"int8-{f.name}": f.lint_ignore for f in FLAVOURS.values()}}
    for result in results:
        model = onnx.load(result.path)
        top = [n for n in model.graph.node if n.op_type == "TopK"]
        assert [n.name.startswith("/head/") for n in top] == [True], result.variant
        assert lint_for_tensorrt(model, ignore=ignore[result.variant]) == [], result.variant


@pytest.mark.parametrize("text", ["max", "topk:7", "quantile:0.9"])
def test_host_rule_equals_the_graph_rule(text):
    """ScoreRule.of (the valid part of a letterboxed input) computes what the head computes in the graph."""
    import torch

    from dfr_edge.model import AnomalyHead

    amap = np.random.default_rng(3).random((1, 32, 32), dtype=np.float32)
    head = AnomalyHead((32, 32), channels=4, score=text)
    expected = float(head.image_score(torch.from_numpy(amap))[0])
    assert ScoreRule.parse(text).of(amap[0]) == pytest.approx(expected, rel=1e-6)
