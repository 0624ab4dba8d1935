"""Static TensorRT-compatibility lint for ONNX graphs (no GPU, no TensorRT needed).

Run at export time and in tests on every ONNX variant (FP32, FP16, INT8 Q/DQ). Each rule is one
small generator over a prepared :class:`_Context`; :func:`lint_for_tensorrt` runs them all and
returns every finding, :func:`check_for_tensorrt` raises if there is any.

Rules (DEPLOY_NOTES.md §3.1 and §7, ARCHITECTURE.md "Contracts"):
  opset           default-domain opset <= MAX_OPSET
  op-unsupported  op not in TRT_10_3_OPS, or a node outside the default ONNX domain
  resize-mode     Resize mode / coordinate transform / antialias / aspect-ratio policy
  pool-ceil-mode  MaxPool/AveragePool with ceil_mode=1
  pool-dilations  MaxPool/AveragePool with dilations != 1
  qdq-zero-point  Q/DQ zero point not an all-zero constant (TensorRT is symmetric only)
  qdq-type        quantized type not int8 (e.g. uint8 from QUInt8)
  dq-int32        DequantizeLinear of an int32 tensor (ORT's quantized bias)
  qdq-axis        per-channel Q/DQ on something that is not a weight
  head-missing    no node carries the head prefix
  head-qdq        Q/DQ node inside the head, or a head node fed by a DequantizeLinear
  head-not-fp32   a head node reads or writes a non-float32 floating tensor
  io-dtype        floating graph output not float32; graph input not uint8/float32
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

__all__ = [
    "LintFinding",
    "TensorRTLintError",
    "TRT_10_3_OPS",
    "MAX_OPSET",
    "lint_for_tensorrt",
    "check_for_tensorrt",
]

# Opset ceiling of the export target: TensorRT 8.6 (JetPack 6.0) supports opset <= 17; 10.x parses
# opset 9..20+ (DEPLOY_NOTES.md §7). One export at 17 runs on both.
MAX_OPSET = 17

# Operators marked "Y" in the ONNX-TensorRT parser support matrix.
# Source: github.com/onnx/onnx-tensorrt, docs/operators.md at commit 554c9f1b7fc048e39e3afe0c2af757902eb7b23e
# ("TensorRT 10.8 supports operators in the inclusive range of opset 9 to opset 22") -- the 10.x
# version nearest to 10.3 that could be read in full (no 10.3 copy was found). Ops that
# docs/Changelog.md says were added after 10.3 are removed: 10.4 "Added support for BlackmanWindow,
# HammingWindow, and HannWindow"; 10.5 "Added support for real-valued STFT". 10.6-10.8 add no op.
TRT_10_3_OPS: frozenset[str] = frozenset(
    {
        "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
        "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat",
        "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum",
        "DeformConv", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu",
        "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements",
        "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool",
        "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "GRU", "HardSigmoid",
        "HardSwish", "Hardmax", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf",
        "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax",
        "Loop", "LRN", "LSTM", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean",
        "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression",
        "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu",
        "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform",
        "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
        "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
        "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RNN", "RoiAlign",
        "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape",
        "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus",
        "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh",
        "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where",
        "Xor",
    }
)

_DEFAULT_DOMAINS = ("", "ai.onnx")
_QDQ = ("QuantizeLinear", "DequantizeLinear")
_RESIZE_MODES = ("nearest", "linear")
_RESIZE_COORDS = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
_FLOAT_TYPE_NAMES = ("FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
_FLOAT_TYPES = frozenset(getattr(TensorProto, n) for n in _FLOAT_TYPE_NAMES if hasattr(TensorProto, n))


@dataclass(frozen=True)
class LintFinding:
    rule: str  # short id, e.g. "op-unsupported"
    node: str  # node name ('' for graph-level)
    message: str  # what is wrong and what to do

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node or '<graph>'}: {self.message}"


class TensorRTLintError(ValueError):
    """Raised by :func:`check_for_tensorrt`; ``.findings`` holds every finding."""

    def __init__(self, findings: list[LintFinding]):
        self.findings = list(findings)
        lines = "\n".join(f"  {f}" for f in self.findings)
        super().__init__(f"ONNX graph is not TensorRT-compatible ({len(self.findings)} finding(s)):\n{lines}")


# --------------------------------------------------------------------------------------------
# Context: everything the rules look up, built once per model.


@dataclass
class _Context:
    model: onnx.ModelProto  # shape-inferred when inference succeeded
    head_prefix: str
    nodes: list[onnx.NodeProto]  # all nodes, subgraphs included
    consts: dict[str, TensorProto]  # initializers and Constant outputs
    types: dict[str, int]  # tensor name -> TensorProto elem type
    producer: dict[str, onnx.NodeProto]  # tensor name -> node that writes it

    def is_weight(self, name: str) -> bool:
        """A constant, or a QuantizeLinear of a constant (float weight + Q + DQ form)."""
        if name in self.consts:
            return True
        p = self.producer.get(name)
        return p is not None and p.op_type == "QuantizeLinear" and p.input[0] in self.consts

    def head_nodes(self) -> list[onnx.NodeProto]:
        return [n for n in self.nodes if n.name.startswith(self.head_prefix)]


def _walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == AttributeProto.GRAPH:
                yield from _walk(a.g)
            elif a.type == AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _walk(g)


def _constant_value(node: onnx.NodeProto) -> TensorProto | None:
    for a in node.attribute:
        if a.name == "value":
            return a.t
        if a.name in ("value_float", "value_floats", "value_int", "value_ints"):
            dtype = np.float32 if "float" in a.name else np.int64
            return numpy_helper.from_array(np.asarray(helper.get_attribute_value(a), dtype=dtype))
    return None


def _context(model: onnx.ModelProto, head_prefix: str) -> _Context:
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # unknown ops / opsets: lint with the types the graph already declares
        pass
    g = model.graph
    nodes = list(_walk(g))
    consts = {t.name: t for t in g.initializer}
    for n in nodes:
        if n.op_type == "Constant" and n.domain in _DEFAULT_DOMAINS and n.output:
            value = _constant_value(n)
            if value is not None:
                consts[n.output[0]] = value
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in [*g.input, *g.output, *g.value_info]
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type
    }
    types.update({name: t.data_type for name, t in consts.items()})
    producer = {out: n for n in nodes for out in n.output if out}
    return _Context(model, head_prefix, nodes, consts, types, producer)


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"<unnamed {node.op_type} -> {node.output[0] if node.output else '?'}>"


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _input(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _dtype(t: int | None) -> str:
    return TensorProto.DataType.Name(t) if t else "unknown"


# --------------------------------------------------------------------------------------------
# Rules. Each takes the context and yields findings.


def _check_opset(ctx: _Context) -> Iterator[LintFinding]:
    for imp in ctx.model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS and imp.version > MAX_OPSET:
            yield LintFinding(
                "opset", "",
                f"default-domain opset is {imp.version} > {MAX_OPSET}; export with "
                f"opset_version={MAX_OPSET} so TensorRT 8.6 (JetPack 6.0) and 10.x both parse it.",
            )


def _check_ops(ctx: _Context) -> Iterator[LintFinding]:
    for n in ctx.nodes:
        if n.domain not in _DEFAULT_DOMAINS:
            yield LintFinding(
                "op-unsupported", _label(n),
                f"{n.domain}::{n.op_type} is outside the default ONNX domain; TensorRT's ONNX parser "
                "cannot import it without a plugin. Export/quantize without runtime-specific ops "
                "(e.g. ORT contrib ops, QOperator format; use QuantFormat.QDQ).",
            )
        elif n.op_type not in TRT_10_3_OPS:
            yield LintFinding(
                "op-unsupported", _label(n),
                f"{n.op_type} is not supported by the TensorRT 10.3 ONNX parser; rewrite it with "
                "supported ops (see onnx-tensorrt docs/operators.md).",
            )


def _check_resize(ctx: _Context) -> Iterator[LintFinding]:
    for n in ctx.nodes:
        if n.op_type != "Resize":
            continue
        a = _attrs(n)
        mode = a.get("mode", "nearest")
        coord = a.get("coordinate_transformation_mode", "half_pixel")
        policy = a.get("keep_aspect_ratio_policy", "stretch")
        problems = []
        if mode not in _RESIZE_MODES:
            problems.append(f"mode={mode!r}; TensorRT supports {_RESIZE_MODES} (bilinear/nearest, not bicubic).")
        if coord not in _RESIZE_COORDS:
            problems.append(f"coordinate_transformation_mode={coord!r}; TensorRT supports {_RESIZE_COORDS}.")
        if a.get("antialias", 0):
            problems.append("antialias=1 is not supported by TensorRT; interpolate with antialias=False.")
        if policy != "stretch":
            problems.append(f"keep_aspect_ratio_policy={policy!r}; TensorRT supports only 'stretch' (pass sizes).")
        for message in problems:
            yield LintFinding("resize-mode", _label(n), message)


def _check_pools(ctx: _Context) -> Iterator[LintFinding]:
    for n in ctx.nodes:
        if n.op_type not in ("MaxPool", "AveragePool"):
            continue
        a = _attrs(n)
        if a.get("ceil_mode", 0):
            yield LintFinding(
                "pool-ceil-mode", _label(n),
                "ceil_mode=1: PyTorch, ONNX Runtime and TensorRT disagree on the boundary windows; "
                "use explicit padding and ceil_mode=False.",
            )
        if any(d != 1 for d in a.get("dilations", [])):
            yield LintFinding(
                "pool-dilations", _label(n), f"dilations={list(a['dilations'])}; TensorRT pooling needs them empty or all 1."
            )


def _qdq_nodes(ctx: _Context) -> Iterator[onnx.NodeProto]:
    return (n for n in ctx.nodes if n.op_type in _QDQ)


def _check_qdq_zero_point(ctx: _Context) -> Iterator[LintFinding]:
    for n in _qdq_nodes(ctx):
        zp = _input(n, 2)
        if not zp:
            continue
        value = ctx.consts.get(zp)
        if value is None:
            yield LintFinding(
                "qdq-zero-point", _label(n), f"zero point {zp!r} is not a constant; TensorRT needs an all-zero initializer."
            )
        elif np.any(numpy_helper.to_array(value) != 0):
            yield LintFinding(
                "qdq-zero-point", _label(n),
                f"zero point {zp!r} is non-zero (asymmetric quantization); TensorRT is symmetric only: "
                "quantize with extra_options ActivationSymmetric=True and WeightSymmetric=True.",
            )


def _check_qdq_type(ctx: _Context) -> Iterator[LintFinding]:
    for n in _qdq_nodes(ctx):
        zp = _input(n, 2)
        if n.op_type == "DequantizeLinear":
            qtype = ctx.types.get(n.input[0])
        else:  # Q: from its zero point or output_dtype; with neither it is not judged here
            qtype = ctx.types.get(zp) if zp else _attrs(n).get("output_dtype")
        if qtype == TensorProto.INT32 and n.op_type == "DequantizeLinear":
            yield LintFinding(
                "dq-int32", _label(n),
                f"DequantizeLinear of int32 tensor {n.input[0]!r} (ORT's quantized bias); TensorRT DQ accepts "
                "only INT8/FP8/INT4 inputs: quantize with extra_options QuantizeBias=False.",
            )
        elif qtype and qtype != TensorProto.INT8:
            yield LintFinding(
                "qdq-type", _label(n),
                f"quantized type is {_dtype(qtype)}; TensorRT INT8 is int8 only: use "
                "activation_type=QuantType.QInt8 and weight_type=QuantType.QInt8.",
            )


def _check_qdq_axis(ctx: _Context) -> Iterator[LintFinding]:
    for n in _qdq_nodes(ctx):
        scale = ctx.consts.get(_input(n, 1))
        if scale is not None and int(np.prod(scale.dims)) > 1 and not ctx.is_weight(n.input[0]):
            yield LintFinding(
                "qdq-axis", _label(n),
                f"per-channel scale on {n.input[0]!r}, which is not a weight initializer; TensorRT "
                "supports per-channel quantization of weights only, activations must be per-tensor.",
            )


def _check_head_present(ctx: _Context) -> Iterator[LintFinding]:
    if not ctx.head_nodes():
        yield LintFinding(
            "head-missing", "",
            f"no node name starts with {ctx.head_prefix!r}; the fused graph must contain the scoring "
            "head (export it as a submodule named `head` so the exporter scopes its nodes).",
        )


def _check_head_qdq(ctx: _Context) -> Iterator[LintFinding]:
    for n in ctx.head_nodes():
        if n.op_type in _QDQ:
            yield LintFinding(
                "head-qdq", _label(n),
                f"{n.op_type} inside the scoring head; the head stays float32: add head nodes to nodes_to_exclude.",
            )
            continue
        for name in n.input:
            p = ctx.producer.get(name)
            if p is not None and p.op_type == "DequantizeLinear":
                yield LintFinding(
                    "head-qdq", _label(n),
                    f"input {name!r} comes from DequantizeLinear {_label(p)!r}; the head must read the "
                    "float features, not int8-rounded ones: feed it the tensor before the Q/DQ pair (ORT's "
                    "quantize_static routes every consumer of a quantized tensor through the DQ, "
                    "nodes_to_exclude included).",
                )


def _check_head_fp32(ctx: _Context) -> Iterator[LintFinding]:
    for n in ctx.head_nodes():
        # A Cast at the head boundary may read fp16; what it writes must be float32.
        names = list(n.output) if n.op_type == "Cast" else [*n.input, *n.output]
        for name in names:
            t = ctx.types.get(name)
            if name and t in _FLOAT_TYPES and t != TensorProto.FLOAT:
                yield LintFinding(
                    "head-not-fp32", _label(n),
                    f"tensor {name!r} is {_dtype(t)}; the scoring head must compute in float32: exclude "
                    "head nodes from FP16 conversion (nodes_to_exclude / node_block_list).",
                )


def _check_io(ctx: _Context) -> Iterator[LintFinding]:
    g = ctx.model.graph
    for vi in g.output:
        t = vi.type.tensor_type.elem_type
        if t in _FLOAT_TYPES and t != TensorProto.FLOAT:
            yield LintFinding(
                "io-dtype", "", f"graph output {vi.name!r} is {_dtype(t)}; keep graph I/O float32 (keep_io_types=True)."
            )
    initializers = {t.name for t in g.initializer}
    for vi in g.input:
        t = vi.type.tensor_type.elem_type
        if vi.name not in initializers and t not in (TensorProto.UINT8, TensorProto.FLOAT):
            yield LintFinding(
                "io-dtype", "", f"graph input {vi.name!r} is {_dtype(t)}; inputs must be uint8 (image) or float32."
            )


_RULES = (
    _check_opset,
    _check_ops,
    _check_resize,
    _check_pools,
    _check_qdq_zero_point,
    _check_qdq_type,
    _check_qdq_axis,
    _check_head_present,
    _check_head_qdq,
    _check_head_fp32,
    _check_io,
)


def lint_for_tensorrt(
    model: onnx.ModelProto, *, head_prefix: str = "/head/", ignore: frozenset[str] = frozenset()
) -> list[LintFinding]:
    """Return every TensorRT-compatibility finding for ``model`` (empty list: clean), except
    those whose rule id is in ``ignore`` (rules that do not apply to a CPU-only variant)."""
    ctx = _context(model, head_prefix)
    return [finding for rule in _RULES for finding in rule(ctx) if finding.rule not in ignore]


def check_for_tensorrt(
    model: onnx.ModelProto, *, head_prefix: str = "/head/", ignore: frozenset[str] = frozenset()
) -> None:
    """Raise :class:`TensorRTLintError` listing all findings if ``model`` has any."""
    findings = lint_for_tensorrt(model, head_prefix=head_prefix, ignore=ignore)
    if findings:
        raise TensorRTLintError(findings)
