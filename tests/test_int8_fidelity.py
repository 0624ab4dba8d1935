"""The label-free fidelity check, the sensitivity search and the export gate built on them."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dfr_edge import manifest as manifest_io
from dfr_edge.bundle import load_bundle
from dfr_edge.cli.export import main as export_main
from dfr_edge.data.images import load_images
from dfr_edge.data.mvtec import open_dataset
from dfr_edge.export import fidelity
from dfr_edge.export.fidelity import Fidelity, FidelityBudget, NormalThresholds
from dfr_edge.export.int8 import CPU_FLAVOUR, FLAVOURS, TENSORRT_FLAVOUR
from dfr_edge.export.pipeline import ExportOptions, export_bundle
from dfr_edge.export.sensitivity import (
    CAE_UNIT,
    choose_float_units,
    mixed_int8,
    parse_float_request,
    quantizable_units,
    unit_of,
)
from dfr_edge.runtime.onnxrt import EXPORT_INFO_KEY

TINY_SIZE = 64


def perturbed(model: onnx.ModelProto, prefix: str, scale: float, seed: int = 0) -> onnx.ModelProto:
    """A copy whose convolution weights under `prefix` carry relative Gaussian noise of `scale`."""
    noisy = onnx.ModelProto()
    noisy.CopyFrom(model)
    weights = {n.input[1] for n in noisy.graph.node if n.op_type == "Conv" and n.name.startswith(prefix)}
    rng = np.random.default_rng(seed)
    for init in noisy.graph.initializer:
        if init.name in weights:
            w = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array((w * (1 + scale * rng.standard_normal(w.shape))).astype(w.dtype),
                                                  init.name))
    return noisy


@pytest.fixture(scope="module")
def reference(tiny_onnx, tiny_data) -> fidelity.Reference:
    images = load_images(open_dataset(tiny_data).train[:6], TINY_SIZE, TINY_SIZE).images
    thresholds = NormalThresholds.from_manifest(manifest_io.read(tiny_onnx.parent / manifest_io.MANIFEST_NAME))
    return fidelity.reference(onnx.load(tiny_onnx), images, thresholds)


def test_fidelity_ranks_perturbations_by_strength(tiny_onnx, reference):
    fp32 = onnx.load(tiny_onnx)
    same = fidelity.measure(reference, fp32)
    assert same.map_shift == 0.0 and same.pixel_fpr == same.pixel_fpr_fp32
    shifts = [fidelity.measure(reference, perturbed(fp32, "/extractor/backbone/", s)).map_shift
              for s in (0.01, 0.1, 0.5)]
    assert 0 < shifts[0] < shifts[1] < shifts[2]
    budget = FidelityBudget(map_shift=(shifts[0] + shifts[1]) / 2, score_shift=1e9)
    assert [fidelity.measure(reference, perturbed(fp32, "/extractor/backbone/", s)).within(budget)
            for s in (0.01, 0.1)] == [True, False]


def test_fidelity_measures_the_tail_and_the_scores():
    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, 0, 0] = 10.0  # the only pixel at or above the pixel threshold 5: the tail
    maps[1, :2, :2] = 4.0  # below it, until shifted
    ref = fidelity.Reference(np.zeros((2, 4, 4, 3), np.uint8), maps, np.array([1.0, 1.0]),
                             NormalThresholds(pixel=5.0, image=2.0, pixel_median=1.0))
    result = fidelity.compare_maps(ref, maps + 2.0, np.array([3.0, 1.0]))
    assert result.map_shift == pytest.approx(2.0 / (5.0 - 1.0))  # tail error / (threshold - median)
    assert result.score_shift == pytest.approx(1.8 / (2.0 - 1.0))  # p90 of |[2, 0]| / (threshold - median)
    assert (result.pixel_fpr_fp32, result.pixel_fpr) == (1 / 32, 5 / 32)  # at FP32's thresholds
    assert (result.image_fpr_fp32, result.image_fpr) == (0.0, 0.5)
    problems = result.problems(FidelityBudget(map_shift=0.4, score_shift=1.0))
    assert problems == ["map shift 0.500 > 0.4", "score shift 1.800 > 1"]
    assert result.within(FidelityBudget(map_shift=0.5, score_shift=1.8))


def test_a_graph_gets_thresholds_that_flag_what_fp32_flags_on_the_same_normal_images():
    rng = np.random.default_rng(0)
    maps, scores = rng.gamma(2.0, 1.0, (6, 32, 32)), rng.normal(5.0, 1.0, 6)
    stored = NormalThresholds(pixel=float(np.quantile(maps, 0.99)), image=float(np.quantile(scores, 0.9)),
                              pixel_median=float(np.median(maps)), pixel_fpr=0.01, image_quantile=0.9)
    lifted = stored.matched(maps, scores, maps * 1.5 + 2.0, scores + 3.0)  # INT8 lifting a whole map
    assert lifted.pixel == pytest.approx(stored.pixel * 1.5 + 2.0) and lifted.image == pytest.approx(stored.image + 3)
    assert lifted.pixel_median == pytest.approx(stored.pixel_median * 1.5 + 2.0)
    assert np.mean(maps * 1.5 + 2.0 > lifted.pixel) == pytest.approx(np.mean(maps > stored.pixel))
    assert (lifted.pixel_fpr, lifted.image_quantile) == (0.01, 0.9)
    assert stored.matched(maps, scores, maps, scores) == stored
    # thresholds stored from other images are carried over by the shift, not re-chosen
    other = dataclasses.replace(stored, pixel=stored.pixel + 0.5)
    assert other.matched(maps, scores, maps + 2.0, scores).pixel == pytest.approx(other.pixel + 2.0)
    written = lifted.written_into({"thresholds": {"pixel": 1.0, "image": 2.0, "pixel_fpr": 0.01},
                                   "normal_stats": {"pixel_median": 0.1, "count": 6}, "input": {}}, "int8-cpu: why")
    assert written["thresholds"] == {"pixel": lifted.pixel, "image": lifted.image, "pixel_fpr": 0.01,
                                     "matched": "int8-cpu: why"}
    assert written["normal_stats"] == {"pixel_median": lifted.pixel_median, "count": 6} and written["input"] == {}


def test_fidelity_check_is_torch_free():
    code = "import sys, dfr_edge.export.fidelity; assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fidelity_budget_refuses_nonsense():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="map_shift must be a positive"):
            FidelityBudget(map_shift=bad)
        with pytest.raises(ValueError, match="score_shift must be a positive"):
            FidelityBudget(score_shift=bad)


# ----------------------------------------------------------------------------------------------
# Sensitivity search


def fake_fidelity(shift: float) -> Fidelity:
    return Fidelity(images=4, map_shift=shift, score_shift=0.0, thresholds=NormalThresholds(5.0, 2.0, 1.0),
                    pixel_fpr_fp32=0.005, pixel_fpr=0.005, image_fpr_fp32=0.0, image_fpr=0.0)


def additive_score(costs: dict[str, float], calls: list):
    """Map shift = sum of the costs of the units that are int8 (a faithful toy of independent errors)."""

    def score(float_units: tuple[str, ...]) -> Fidelity:
        calls.append(float_units)
        return fake_fidelity(sum(c for u, c in costs.items() if u not in float_units))

    return score


def test_greedy_keeps_the_fewest_most_sensitive_units_float():
    costs = {"blocks.0": 0.01, "blocks.1": 0.5, "blocks.2": 0.02, "cae": 0.3}
    calls = []
    result = choose_float_units(costs, additive_score(costs, calls), FidelityBudget(map_shift=0.1))
    assert list(result.sensitivity) == ["blocks.1", "cae", "blocks.2", "blocks.0"]  # most sensitive first
    assert result.sensitivity["blocks.1"] == 0.5
    assert result.float_units == ("blocks.1", "cae") and result.within_budget
    assert [t.float_units for t in result.trials] == [(), ("blocks.1",), ("blocks.1", "cae")]
    assert result.fidelity.map_shift == pytest.approx(0.03)


def test_greedy_stops_at_full_int8_when_within_budget():
    costs = {"blocks.0": 0.01, "cae": 0.02}
    calls = []
    result = choose_float_units(costs, additive_score(costs, calls), FidelityBudget(map_shift=0.1))
    assert result.float_units == () and calls == [()] and result.sensitivity == {}


def test_greedy_says_when_even_all_float_misses_the_budget():
    def score(float_units):
        return fake_fidelity(1.0)  # something outside the searched units moves the map

    result = choose_float_units(["blocks.0", "cae"], score, FidelityBudget(map_shift=0.1))
    assert not result.within_budget and set(result.float_units) == {"blocks.0", "cae"}
    record = result.to_dict()
    assert record["within_budget"] is False and record["budget"]["map_shift"] == 0.1


@pytest.fixture
def toy_precisions(monkeypatch):
    """mixed_int8 on a toy: two units, and per weight precision the map shift each unit adds when it is int8
    (quantizing and measuring replaced by lookups; the search and the choice between precisions are real)."""
    from dfr_edge.export import sensitivity

    costs: dict[int, dict[str, float]] = {}
    quantized: list[tuple[int, tuple[str, ...]]] = []
    monkeypatch.setattr(sensitivity, "quantizable_units", lambda *args: {"blocks.0": ["blocks.0"], "cae": ["cae"]})

    def quantize(source, flavour, method, nodes, bits):
        quantized.append((bits, nodes))
        return bits, nodes

    def measure(ref, model, exact):
        checked_exactly.append(exact)
        bits, float_nodes = model
        return fake_fidelity(sum(c for unit, c in costs[bits].items() if unit not in float_nodes))

    checked_exactly: list[bool] = []
    monkeypatch.setattr(sensitivity, "quantize_int8", quantize)
    monkeypatch.setattr(sensitivity, "measure", measure)
    return costs, quantized, checked_exactly


def toy_search(flavour, request="auto"):
    return mixed_int8(dataclasses.make_dataclass("Src", ["graph"])(None), flavour, "minmax", None,
                      FidelityBudget(map_shift=0.1), request)


def test_seven_bits_are_searched_only_when_eight_bits_need_float_units(toy_precisions):
    costs, quantized, _ = toy_precisions
    costs.update({8: {"blocks.0": 0.05, "cae": 0.01}, 7: {"blocks.0": 0.0, "cae": 0.0}})
    result = toy_search(CPU_FLAVOUR)
    assert result.choice.weight_bits == 8 and result.choice.float_units == () and quantized == [(8, ())]
    assert [s.weight_bits for s in result.searches] == [8] and result.model == (8, ())


def test_the_precision_needing_fewer_float_units_then_moving_the_maps_less_wins(toy_precisions):
    costs, _, _ = toy_precisions
    costs.update({8: {"blocks.0": 0.5, "cae": 0.08}, 7: {"blocks.0": 0.5, "cae": 0.03}})  # both: blocks.0 float
    result = toy_search(CPU_FLAVOUR)
    assert [s.weight_bits for s in result.searches] == [8, 7]
    assert result.choice.weight_bits == 7 and result.choice.float_units == ("blocks.0",)
    assert result.model == (7, ("blocks.0",)) and result.choice.to_dict()["weight_bits"] == 7
    costs.update({7: {"blocks.0": 0.5, "cae": 0.5}})  # 7 bits needs both units float: 8 bits wins
    assert toy_search(CPU_FLAVOUR).choice.weight_bits == 8


def test_a_fixed_request_takes_the_precision_within_budget(toy_precisions):
    costs, quantized, _ = toy_precisions
    costs.update({8: {"blocks.0": 0.5, "cae": 0.0}, 7: {"blocks.0": 0.05, "cae": 0.0}})
    result = toy_search(CPU_FLAVOUR, "none")
    assert result.choice.weight_bits == 7 and result.choice.within_budget and result.needed is None
    quantized.clear()
    result = toy_search(TENSORRT_FLAVOUR, "none")  # 8 bits only: beyond the budget, says what it would need
    assert {bits for bits, _ in quantized} == {8}
    assert not result.choice.within_budget and result.needed == ("blocks.0",)


def test_units_are_blocks_and_the_cae(tiny_onnx):
    assert unit_of("/extractor/backbone/blocks.3/conv_pw/Conv") == "blocks.3"
    assert unit_of("/cae/encoder/encoder.0/Conv") == CAE_UNIT
    assert unit_of("/head/Conv") is None and unit_of("/extractor/preprocess/Conv") is None
    units = quantizable_units(onnx.load(tiny_onnx), ("Conv", "Clip", "Relu", "Add"), ("/extractor/backbone/stem/",))
    assert CAE_UNIT in units and "blocks.0" in units
    assert not any(n.startswith("/extractor/backbone/stem/") for nodes in units.values() for n in nodes)


def test_float_request_parsing():
    assert parse_float_request("auto") == "auto" and parse_float_request(" none ") == "none"
    assert parse_float_request("blocks.3, cae") == ("blocks.3", "cae")
    with pytest.raises(ValueError, match="--float-blocks"):
        parse_float_request(",")


# ----------------------------------------------------------------------------------------------
# The export gate


@pytest.fixture
def bundle_copy(tmp_path, tiny_bundle):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy, ignore=shutil.ignore_patterns("*.onnx"))
    return copy


@pytest.fixture(scope="module")
def loaded(tiny_bundle):
    return load_bundle(tiny_bundle)


def at(bundle, folder):
    return dataclasses.replace(bundle, path=folder, manifest=manifest_io.read(folder / manifest_io.MANIFEST_NAME))


@pytest.fixture
def few_units(monkeypatch):
    """Search only the CAE: the search logic is tested above, here it only has to run (and fast)."""
    import dfr_edge.export.sensitivity as sensitivity

    every = sensitivity.quantizable_units

    def first_units(*args):
        return {u: nodes for u, nodes in every(*args).items() if u == CAE_UNIT}

    monkeypatch.setattr(sensitivity, "quantizable_units", first_units)


@pytest.mark.slow
def test_gate_refuses_and_writes_nothing(bundle_copy, few_units, capsys):
    """dfr-export --int8 beyond the budget: one error line naming the blocks it would need, no file at all."""
    before = sorted(p.name for p in bundle_copy.iterdir())
    code = export_main([str(bundle_copy), "--int8", "--calib-count", "4", "--float-blocks", "none",
                        "--fidelity-budget", "1e-9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: INT8 beyond the fidelity budget")
    assert re.search(r"int8-tensorrt: map shift .* with float units none; (it would need float units|no set)", err[0])
    assert "int8-cpu: " in err[0] and "nothing written" in err[0] and "--allow-drop" in err[0]
    assert sorted(p.name for p in bundle_copy.iterdir()) == before  # not even model.onnx


@pytest.mark.slow
def test_allow_drop_writes_and_records_float_units(bundle_copy, loaded, few_units, caplog):
    options = ExportOptions(int8=True, calib_count=4, float_blocks=("cae",), fidelity_budget=1e-9, allow_drop=True)
    caplog.set_level(logging.INFO, logger="dfr_edge.export.pipeline")
    results = {r.variant: r for r in export_bundle(at(loaded, bundle_copy), options)}
    for variant in ("int8-tensorrt", "int8-cpu"):  # the user is told the graph's thresholds and its noise floor
        assert re.search(rf"{variant} thresholds by its own normal outputs: .* lifts the normal median by", caplog.text)
    held = json.loads({p.key: p.value for p in onnx.load(results["int8-cpu"].path).metadata_props}[EXPORT_INFO_KEY])
    count = held["fidelity"]["held_out"]["count"]
    assert count < 16 and f"rest on {count} held-out normal images" in caplog.text  # the tiny bundle holds few
    for variant in ("int8-tensorrt", "int8-cpu"):
        record = json.loads({p.key: p.value for p in onnx.load(results[variant].path).metadata_props}[EXPORT_INFO_KEY])
        assert record["quantization"]["float_units"] == ["cae"]
        check = record["fidelity"]
        assert check["float_units"] == ["cae"] and check["within_budget"] is False
        assert check["budget"]["map_shift"] == 1e-9 and "needed_float_units" in check
        assert check["held_out"]["source"].startswith("validation split") and check["held_out"]["count"] >= 1
        assert check["fidelity"]["map_shift"] > 0
        # the graph thresholds by its own normal outputs; the bundle keeps FP32's
        own = manifest_io.from_onnx(onnx.load(results[variant].path), variant)
        assert own["thresholds"]["pixel"] == check["fidelity"]["thresholds"]["pixel"] != loaded.manifest["thresholds"]["pixel"]
        assert own["thresholds"]["image"] == check["fidelity"]["thresholds"]["image"]
        assert own["normal_stats"]["pixel_median"] == check["fidelity"]["thresholds"]["pixel_median"]
        assert own["thresholds"]["matched"].startswith(f"{variant}: FP32's thresholds moved")
    assert manifest_io.read(bundle_copy / manifest_io.MANIFEST_NAME)["thresholds"] == loaded.manifest["thresholds"]


def saturating_qdq_graph(channels: int = 8, act_scale: float = 2.0, out_scale: float = 4096.0) -> onnx.ModelProto:
    """The fused graph's I/O around one Q/DQ 1x1 convolution whose int8 weights are all 127: pairs of
    bright-pixel products overflow the 16-bit sums of x86 uint8 x int8 kernels without VNNI."""
    inits = [numpy_helper.from_array(np.array(act_scale, np.float32), "sx"),
             numpy_helper.from_array(np.array(0, np.int8), "zx"),
             numpy_helper.from_array(np.full((1, channels, 1, 1), 127, np.int8), "wq"),
             numpy_helper.from_array(np.ones(1, np.float32), "sw"),
             numpy_helper.from_array(np.zeros(1, np.int8), "zw"),
             numpy_helper.from_array(np.array(out_scale, np.float32), "sy"),
             numpy_helper.from_array(np.array(0, np.int8), "zy"),
             numpy_helper.from_array(np.array([1], np.int64), "channel_axis")]
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["f"], ["x"], perm=[0, 3, 1, 2]),
             helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"]),
             helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["yd"]),
             helper.make_node("Squeeze", ["yd", "channel_axis"], ["anomaly_map"]),
             helper.make_node("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2], keepdims=0)]
    graph = helper.make_graph(
        nodes, "saturating", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["n", 4, 4, channels])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["n", 4, 4]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_exact_check_computes_the_integer_maths_as_written():
    """What TensorRT computes (int32 sums), whatever ONNX Runtime's fused CPU kernels do with this graph
    (on the 2-core AMD EPYC without VNNI: 0 for pixels where the maths gives 221,184-237,568)."""
    images = np.random.default_rng(0).integers(200, 256, (3, 4, 4, 8), dtype=np.uint8)
    activations = np.clip(np.round(images / 2.0), -128, 127) * 2.0
    expected = np.clip(np.round((activations * 127).sum(axis=3) / 4096.0), -128, 127) * 4096.0
    maps, scores = fidelity.run_graph(saturating_qdq_graph(), images, exact=True)
    np.testing.assert_array_equal(maps, expected)
    np.testing.assert_array_equal(scores, expected.max(axis=(1, 2)))


def test_an_exact_check_compares_with_fp32_run_exactly_too():
    """Fused and unfused float kernels differ in the last bits: an unquantized graph must still measure 0."""
    maps = np.full((2, 4, 4), 3.0, np.float32)
    ref = fidelity.Reference(np.zeros((2, 4, 4, 3), np.uint8), maps, np.array([3.0, 3.0]),
                             NormalThresholds(pixel=5.0, image=3.0 + 1e-6, pixel_median=1.0),
                             exact_maps=maps + 1e-5, exact_scores=np.array([3.0, 3.0]) + 1e-5)
    same_as_exact = fidelity.compare_maps(ref, maps + 1e-5, np.array([3.0, 3.0]) + 1e-5, exact=True)
    assert same_as_exact.map_shift == 0.0 and same_as_exact.score_shift == 0.0
    assert fidelity.compare_maps(ref, maps + 1e-5, np.array([3.0, 3.0]) + 1e-5).score_shift > 1.0


def test_only_the_graph_another_engine_runs_is_checked_exactly(toy_precisions):
    costs, _, checked_exactly = toy_precisions
    costs.update({8: {"blocks.0": 0.0, "cae": 0.0}, 7: {"blocks.0": 0.0, "cae": 0.0}})
    toy_search(FLAVOURS["tensorrt"])
    assert checked_exactly and all(checked_exactly)
    checked_exactly.clear()
    toy_search(FLAVOURS["cpu"])
    assert checked_exactly and not any(checked_exactly)
