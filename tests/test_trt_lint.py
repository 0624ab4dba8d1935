"""Tests for dfr_edge.export.trt_lint: each rule on a tiny graph built to break it, plus real
exports (torch, ONNX Runtime quantize_static) of a small backbone + CAE + head model."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dfr_edge.export.trt_lint import (
    MAX_OPSET,
    TRT_10_3_OPS,
    LintFinding,
    TensorRTLintError,
    check_for_tensorrt,
    lint_for_tensorrt,
)

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def rules(model: onnx.ModelProto, **kw) -> set[str]:
    return {f.rule for f in lint_for_tensorrt(model, **kw)}


# ----------------------------------------------------------------------------------------------
# Hand-built graphs


def _init(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def clean_model(dtype: int = F32, opset: int = MAX_OPSET) -> onnx.ModelProto:
    """image -> conv (features) + conv (reconstruction) -> head: Sub, Mul, ReduceMean, Resize, ReduceMax.

    With ``dtype=F16`` the head computes in float16 between Casts named outside the head.
    """
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["image", "w0"], ["feat"], name="/backbone/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["feat", "w1"], ["recon"], name="/cae/Conv"),
    ]
    f, r = "feat", "recon"
    if dtype != F32:
        nodes += [
            helper.make_node("Cast", ["feat"], ["feat_lp"], name="/cast_feat", to=dtype),
            helper.make_node("Cast", ["recon"], ["recon_lp"], name="/cast_recon", to=dtype),
        ]
        f, r = "feat_lp", "recon_lp"
    amap, score = ("amap_lp", "score_lp") if dtype != F32 else ("anomaly_map", "score")
    nodes += [
        helper.make_node("Sub", [f, r], ["diff"], name="/head/Sub"),
        helper.make_node("Mul", ["diff", "diff"], ["sq"], name="/head/Mul"),
        helper.make_node("ReduceMean", ["sq"], ["err"], name="/head/ReduceMean", axes=[1], keepdims=1),
        helper.make_node(
            "Resize", ["err", "", "scales"], [amap], name="/head/Resize",
            mode="linear", coordinate_transformation_mode="align_corners",
        ),
        helper.make_node("ReduceMax", [amap], [score], name="/head/ReduceMax", axes=[1, 2, 3], keepdims=0),
    ]
    if dtype != F32:
        nodes += [
            helper.make_node("Cast", [amap], ["anomaly_map"], name="/cast_map", to=F32),
            helper.make_node("Cast", [score], ["score"], name="/cast_score", to=F32),
        ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", F32, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("anomaly_map", F32, None), helper.make_tensor_value_info("score", F32, None)],
        initializer=[
            _init("w0", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
            _init("w1", rng.standard_normal((4, 4, 1, 1)).astype(np.float32)),
            _init("scales", np.array([1, 1, 2, 2], np.float32)),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def set_attrs(model: onnx.ModelProto, name: str, **attrs) -> onnx.ModelProto:
    n = node(model, name)
    for key, value in attrs.items():
        for a in list(n.attribute):
            if a.name == key:
                n.attribute.remove(a)
        n.attribute.append(helper.make_attribute(key, value))
    return model


def with_branch(model, new_nodes, outputs, initializers=(), elem_type=F32) -> onnx.ModelProto:
    """Add side nodes whose results become extra graph outputs (the head is left intact)."""
    model.graph.node.extend(new_nodes)
    model.graph.initializer.extend(initializers)
    model.graph.output.extend(helper.make_tensor_value_info(o, elem_type, None) for o in outputs)
    return model


def dq_branch(x, scale, zero_point=None, name="/side/DequantizeLinear"):
    inits = [_init("xq", x), _init("x_scale", scale)]
    inputs = ["xq", "x_scale"]
    if zero_point is not None:
        inits.append(_init("x_zp", zero_point))
        inputs.append("x_zp")
    return with_branch(clean_model(), [helper.make_node("DequantizeLinear", inputs, ["xf"], name=name)], ["xf"], inits)


# ----------------------------------------------------------------------------------------------
# Clean graphs pass


def test_clean_graph_passes():
    assert lint_for_tensorrt(clean_model()) == []
    check_for_tensorrt(clean_model())  # does not raise


def test_op_list_is_the_parser_table():
    assert {"Conv", "Resize", "ReduceMean", "QuantizeLinear", "DequantizeLinear", "NonMaxSuppression"} <= TRT_10_3_OPS
    # "N" rows in onnx-tensorrt docs/operators.md, and ops the Changelog adds only after 10.3.
    assert not {"QLinearConv", "ConvInteger", "Det", "Unique", "STFT", "HannWindow"} & TRT_10_3_OPS


# ----------------------------------------------------------------------------------------------
# One graph per rule


def test_unsupported_op():
    m = with_branch(
        clean_model(),
        [helper.make_node("Det", ["mat"], ["det"], name="/side/Det")],
        ["det"],
        [_init("mat", np.eye(2, dtype=np.float32))],
    )
    found = lint_for_tensorrt(m)
    assert [(f.rule, f.node) for f in found] == [("op-unsupported", "/side/Det")]
    assert "Det" in found[0].message


def test_foreign_domain_op():
    m = with_branch(
        clean_model(),
        [helper.make_node("Gelu", ["feat"], ["gelu"], name="/side/Gelu", domain="com.microsoft")],
        ["gelu"],
    )
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    found = lint_for_tensorrt(m)
    assert [(f.rule, f.node) for f in found] == [("op-unsupported", "/side/Gelu")]
    assert "com.microsoft" in found[0].message


def test_opset_18():
    assert rules(clean_model(opset=18)) == {"opset"}


@pytest.mark.parametrize(
    "attrs",
    [
        {"mode": "cubic"},
        {"antialias": 1},
        {"coordinate_transformation_mode": "tf_crop_and_resize"},
        {"keep_aspect_ratio_policy": "not_larger"},
    ],
)
def test_resize_attributes(attrs):
    found = lint_for_tensorrt(set_attrs(clean_model(), "/head/Resize", **attrs))
    assert [(f.rule, f.node) for f in found] == [("resize-mode", "/head/Resize")]


def test_maxpool_ceil_mode_and_dilations():
    pool = helper.make_node("MaxPool", ["feat"], ["pooled"], name="/side/MaxPool", kernel_shape=[2, 2], ceil_mode=1)
    assert rules(with_branch(clean_model(), [pool], ["pooled"])) == {"pool-ceil-mode"}
    pool = helper.make_node("AveragePool", ["feat"], ["pooled"], name="/side/AvgPool", kernel_shape=[2, 2], dilations=[2, 2])
    assert rules(with_branch(clean_model(), [pool], ["pooled"])) == {"pool-dilations"}


def test_dq_uint8_zero_point():
    m = dq_branch(np.full((4,), 130, np.uint8), np.float32(0.1), np.uint8(128))
    assert rules(m) == {"qdq-zero-point", "qdq-type"}
    m = dq_branch(np.full((4,), 130, np.uint8), np.float32(0.1), np.uint8(0))
    assert rules(m) == {"qdq-type"}


def test_dq_nonzero_int8_zero_point():
    m = dq_branch(np.full((4,), 3, np.int8), np.float32(0.1), np.int8(5))
    found = lint_for_tensorrt(m)
    assert [(f.rule, f.node) for f in found] == [("qdq-zero-point", "/side/DequantizeLinear")]


def test_dq_symmetric_int8_passes():
    assert lint_for_tensorrt(dq_branch(np.full((4,), 3, np.int8), np.float32(0.1), np.int8(0))) == []
    assert lint_for_tensorrt(dq_branch(np.full((4,), 3, np.int8), np.float32(0.1))) == []


def test_dq_of_int32_initializer():
    m = dq_branch(np.arange(4, dtype=np.int32), np.float32(0.01), np.int32(0))
    assert rules(m) == {"dq-int32"}


def test_per_channel_qdq_on_activation():
    q = helper.make_node("QuantizeLinear", ["feat", "ch_scale", "ch_zp"], ["feat_q"], name="/side/Q", axis=1)
    dq = helper.make_node("DequantizeLinear", ["feat_q", "ch_scale", "ch_zp"], ["feat_dq"], name="/side/DQ", axis=1)
    inits = [_init("ch_scale", np.full((4,), 0.1, np.float32)), _init("ch_zp", np.zeros((4,), np.int8))]
    found = lint_for_tensorrt(with_branch(clean_model(), [q, dq], ["feat_dq"], inits))
    assert [(f.rule, f.node) for f in found] == [("qdq-axis", "/side/Q"), ("qdq-axis", "/side/DQ")]


def test_per_channel_dq_on_weight_passes():
    # The ORT form (int8 weight initializer + per-channel DQ) and the ModelOpt form (float weight + Q + DQ).
    m = clean_model()
    conv = node(m, "/backbone/Conv")
    w = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "w0"))
    m.graph.initializer.extend([
        _init("w0_q", np.zeros(w.shape, np.int8)),
        _init("w0_scale", np.full((4,), 0.01, np.float32)),
        _init("w0_zp", np.zeros((4,), np.int8)),
    ])
    m.graph.node.insert(0, helper.make_node("DequantizeLinear", ["w0_q", "w0_scale", "w0_zp"], ["w0_dq"], name="/w0/DQ", axis=0))
    m.graph.node.insert(0, helper.make_node("QuantizeLinear", ["w0", "w0_scale", "w0_zp"], ["w0_fq"], name="/w0/Q", axis=0))
    m.graph.node.insert(1, helper.make_node("DequantizeLinear", ["w0_fq", "w0_scale", "w0_zp"], ["w0_fdq"], name="/w0/DQ2", axis=0))
    conv.input[1] = "w0_dq"
    m.graph.output.append(helper.make_tensor_value_info("w0_fdq", F32, None))
    assert lint_for_tensorrt(m) == []


def test_qdq_inside_head():
    m = clean_model()
    node(m, "/head/Mul").input[:] = ["diff_dq", "diff_dq"]
    m.graph.initializer.extend([_init("s", np.float32(0.1)), _init("zp", np.int8(0))])
    m.graph.node.extend([
        helper.make_node("QuantizeLinear", ["diff", "s", "zp"], ["diff_q"], name="/head/Sub_q"),
        helper.make_node("DequantizeLinear", ["diff_q", "s", "zp"], ["diff_dq"], name="/head/Sub_dq"),
    ])
    found = lint_for_tensorrt(m)
    assert {f.rule for f in found} == {"head-qdq"}
    assert {f.node for f in found} == {"/head/Sub_q", "/head/Sub_dq", "/head/Mul"}


def test_head_fed_by_dequantize():
    m = clean_model()
    node(m, "/head/Sub").input[0] = "feat_dq"
    m.graph.initializer.extend([_init("s", np.float32(0.1)), _init("zp", np.int8(0))])
    m.graph.node.extend([
        helper.make_node("QuantizeLinear", ["feat", "s", "zp"], ["feat_q"], name="/backbone/feat_q"),
        helper.make_node("DequantizeLinear", ["feat_q", "s", "zp"], ["feat_dq"], name="/backbone/feat_dq"),
    ])
    found = lint_for_tensorrt(m)
    assert [(f.rule, f.node) for f in found] == [("head-qdq", "/head/Sub")]


def test_float16_head():
    found = lint_for_tensorrt(clean_model(dtype=F16))
    assert {f.rule for f in found} == {"head-not-fp32"}
    assert {f.node for f in found} == {"/head/Sub", "/head/Mul", "/head/ReduceMean", "/head/Resize", "/head/ReduceMax"}


def test_float16_graph_output_and_input():
    cast = helper.make_node("Cast", ["anomaly_map"], ["anomaly_map_fp16"], name="/out/Cast", to=F16)
    m = with_branch(clean_model(), [cast], ["anomaly_map_fp16"], elem_type=F16)
    found = lint_for_tensorrt(m)
    assert [(f.rule, f.node) for f in found] == [("io-dtype", "")]
    assert "anomaly_map_fp16" in found[0].message

    m = clean_model()
    m.graph.input[0].type.tensor_type.elem_type = F16
    assert "io-dtype" in rules(m)


def test_head_missing():
    m = clean_model()
    for n in m.graph.node:
        n.name = n.name.replace("/head/", "/scoring/")
    assert rules(m) == {"head-missing"}
    assert rules(clean_model(), head_prefix="/nothere/") == {"head-missing"}


def test_check_for_tensorrt_lists_every_finding():
    m = set_attrs(clean_model(opset=18), "/head/Resize", mode="cubic")
    m = with_branch(m, [helper.make_node("MaxPool", ["feat"], ["p"], name="/side/MaxPool", kernel_shape=[2, 2], ceil_mode=1)], ["p"])
    for n in m.graph.node:
        n.name = n.name.replace("/head/", "/scoring/")
    with pytest.raises(TensorRTLintError) as info:
        check_for_tensorrt(m)
    err = info.value
    assert isinstance(err, ValueError)
    assert {f.rule for f in err.findings} == {"opset", "resize-mode", "pool-ceil-mode", "head-missing"}
    assert all(isinstance(f, LintFinding) for f in err.findings)
    for f in err.findings:
        assert f.rule in str(err) and f.message in str(err)


# ----------------------------------------------------------------------------------------------
# Real exports: torch (legacy exporter, opset 17) and ONNX Runtime quantize_static

H = W = 16


@pytest.fixture(scope="module")
def torch_onnx(tmp_path_factory) -> str:
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class Head(nn.Module):  # difference, square, channel mean, upsample, blur, max
        def forward(self, feat, recon):
            err = ((feat - recon) ** 2).mean(dim=1, keepdim=True)
            amap = F.interpolate(err, size=(H, W), mode="bilinear", align_corners=True)
            amap = F.avg_pool2d(amap, 3, stride=1, padding=1, count_include_pad=False)[:, 0]
            return amap, amap.amax(dim=(1, 2))

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
            )
            self.cae = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 1))
            self.head = Head()

        def forward(self, image):  # uint8 N x H x W x 3, as the fused-graph contract says
            x = image.permute(0, 3, 1, 2).float() / 255.0
            feat = self.backbone(x)
            return self.head(feat, self.cae(feat))

    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("lint") / "tiny.onnx")
    torch.onnx.export(
        Tiny().eval(), (torch.zeros(1, H, W, 3, dtype=torch.uint8),), path, dynamo=False, opset_version=17,
        input_names=["image"], output_names=["anomaly_map", "score"],
        dynamic_axes={"image": {0: "batch"}, "anomaly_map": {0: "batch"}, "score": {0: "batch"}},
    )
    return path


def test_torch_export_passes(torch_onnx):
    m = onnx.load(torch_onnx)
    assert any(n.name.startswith("/head/") for n in m.graph.node)
    assert lint_for_tensorrt(m) == []


def _quantize(src: str, dst: str, **overrides) -> onnx.ModelProto:
    q = pytest.importorskip("onnxruntime.quantization")

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self._batches = iter([{"image": rng.integers(0, 256, (2, H, W, 3), dtype=np.uint8)} for _ in range(3)])

        def get_next(self):
            return next(self._batches, None)

    head = [n.name for n in onnx.load(src).graph.node if n.name.startswith("/head/")]
    options = dict(
        quant_format=q.QuantFormat.QDQ, activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
        per_channel=True, nodes_to_exclude=head,
        extra_options={"ActivationSymmetric": True, "QuantizeBias": False},
    )
    options.update(overrides)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT warns "consider pre-processing"
    try:
        q.quantize_static(src, dst, Reader(), **options)
    finally:
        root.setLevel(level)
    return onnx.load(dst)


def test_ort_qdq_trt_settings_pass_once_head_reads_float(torch_onnx, tmp_path):
    m = _quantize(torch_onnx, str(tmp_path / "int8.onnx"))
    from dfr_edge.export.int8 import feed_float  # needs onnxruntime, like _quantize
    # ORT quantizes the feature tensors the head shares with the CAE and rewires *every* consumer
    # (nodes_to_exclude included) to the DequantizeLinear output: that, and only that, is flagged.
    found = lint_for_tensorrt(m)
    assert found and {(f.rule, f.node) for f in found} == {("head-qdq", "/head/Sub")}
    feed_float(m, prefixes=("/head/",))
    assert lint_for_tensorrt(m) == []

    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    amap, score = sess.run(None, {"image": np.zeros((2, H, W, 3), np.uint8)})
    assert amap.shape == (2, H, W) and score.shape == (2,) and np.isfinite(amap).all()


def test_ort_quantized_bias_is_flagged(torch_onnx, tmp_path):
    m = _quantize(torch_onnx, str(tmp_path / "int8_bias.onnx"), extra_options={"ActivationSymmetric": True})
    from dfr_edge.export.int8 import feed_float  # needs onnxruntime, like _quantize
    feed_float(m, prefixes=("/head/",))
    assert rules(m) == {"dq-int32"}


def test_ort_uint8_activations_are_flagged(torch_onnx, tmp_path):
    q = pytest.importorskip("onnxruntime.quantization")
    m = _quantize(torch_onnx, str(tmp_path / "uint8.onnx"), activation_type=q.QuantType.QUInt8)
    from dfr_edge.export.int8 import feed_float  # needs onnxruntime, like _quantize
    feed_float(m, prefixes=("/head/",))
    assert rules(m) == {"qdq-type", "qdq-zero-point"}
