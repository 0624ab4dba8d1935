"""INT8 variants by post-training static quantization with ONNX Runtime, calibrated on normal images.

Two flavours, because TensorRT and ONNX Runtime's CPU kernels want different graphs:
- `tensorrt` (model.int8.onnx): Q/DQ, int8 activations with zero point 0 (TensorRT is symmetric
  only), per-channel symmetric weights, no bias quantization (an int32 DequantizeLinear does not
  parse) — DEPLOY_NOTES §3.1.
- `cpu` (model.int8-cpu.onnx): QOperator format (QLinearConv, QLinearAdd) with uint8 asymmetric
  activations and int8 per-channel weights, the fastest correct choice measured on x86 (S8S8 ran
  at a fifth of FP32 speed, Q/DQ U8S8 at 1.2x, QOperator U8S8 at 1.5x; benchmarks/README.md).
  It is not a TensorRT input.
Common to both, each measured on MVTec bottle: ReLU/ReLU6 and residual Adds are quantized with
their convolutions (leaving ReLU6 float quantizes the pre-activation range and costs 0.01 pixel
AUROC); preprocessing, the stem convolution (3 input channels: nothing to gain), the regional
resize-pool MatMuls and the scoring head stay float32, and the head reads float features.
Beyond these, whole blocks may stay float when the fidelity check asks for it (sensitivity.py); the
activation ranges come from one bounded-memory calibration pass (calibration.py) shared by every trial.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process

from dfr_edge.data.images import read_images
from dfr_edge.digest import files_digest
from dfr_edge.export.calibration import CALIB_METHODS, ActivationStats, collect_activations
from dfr_edge.geometry import Geometry, model_inputs

log = logging.getLogger(__name__)
HEAD_PREFIX = "/head/"
FLOAT_PREFIXES = ("/extractor/preprocess/", "/extractor/backbone/stem/", "/extractor/regional/", HEAD_PREFIX)
QUANTIZED_OPS = ("Conv", "Clip", "Relu", "Add")
FEW_CALIBRATION_IMAGES = 100


@dataclass(frozen=True)
class Int8Flavour:
    name: str
    filename: str
    quant_format: QuantFormat
    activation_type: QuantType
    weight_type: QuantType
    per_channel: bool
    weight_bits: tuple[int, ...] = (8,)  # weight precisions the float-unit search tries, preferred first
    extra_options: dict = field(default_factory=dict)
    quantized_ops: tuple[str, ...] = QUANTIZED_OPS
    float_prefixes: tuple[str, ...] = FLOAT_PREFIXES  # node-name prefixes kept in float32
    lint_ignore: frozenset[str] = frozenset()  # TensorRT lint rules that do not apply to this flavour
    # Check the graph with its integer maths as written (fidelity.graph_runner), not ONNX Runtime's CPU
    # kernels: True where another engine runs it (TensorRT accumulates int8 products in int32).
    exact_check: bool = False


TENSORRT_FLAVOUR = Int8Flavour(
    name="tensorrt",
    filename="model.int8.onnx",
    quant_format=QuantFormat.QDQ,
    activation_type=QuantType.QInt8,
    weight_type=QuantType.QInt8,
    per_channel=True,
    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    exact_check=True,
)
CPU_FLAVOUR = Int8Flavour(
    name="cpu",
    filename="model.int8-cpu.onnx",
    quant_format=QuantFormat.QOperator,
    activation_type=QuantType.QUInt8,
    weight_type=QuantType.QInt8,
    per_channel=True,
    # QLinear* ops, uint8 zero points and a dequantized reconstruction are what makes it fast on CPU.
    # 7-bit weights (ORT's reduce_range, its advice for x86 without VNNI) took full INT8 on bottle-dark20
    # from -0.091 to -0.003 PRO, and on bottle from -0.006 to -0.161: so both are searched, never assumed.
    weight_bits=(8, 7),
    lint_ignore=frozenset({"op-unsupported", "qdq-type", "qdq-zero-point", "head-qdq"}),
)
FLAVOURS = {f.name: f for f in (TENSORRT_FLAVOUR, CPU_FLAVOUR)}


@dataclass
class CalibrationSet:
    images: np.ndarray  # uint8 N x H x W x 3 BGR model inputs, through the bundle's geometry (tiles count)
    paths: list[Path]
    seed: int
    digest: str

    def record(self, method: str) -> dict:
        return {"method": method, "count": len(self.paths), "seed": self.seed, "files_sha256": self.digest,
                "files": [p.name for p in self.paths]}


def calibration_set(candidates: list[Path], count: int, seed: int, geometry: Geometry) -> CalibrationSet:
    """A seeded sample of real normal images, seen as the runtime sees them (ROI, resize mode, tiles);
    refuses to calibrate on nothing (never random data)."""
    if not candidates:
        raise ValueError("INT8 calibration needs real normal images, and none were found; pass --calib DIR")
    if count < 1:
        raise ValueError("--calib-count must be at least 1")
    candidates = sorted(Path(p) for p in candidates)  # the same files give the same sample
    order = np.random.default_rng(seed).permutation(len(candidates))
    picked = sorted(candidates[i] for i in order[: min(count, len(candidates))])
    if len(picked) < FEW_CALIBRATION_IMAGES:
        log.warning("calibrating INT8 on only %d images: scales may not cover the production range "
                    "(a few hundred normal images are recommended)", len(picked))
    loaded = read_images(picked, geometry.sample)
    return CalibrationSet(model_inputs(loaded.images, geometry.sampled()), loaded.paths, seed,
                          files_digest(loaded.paths))


def float_nodes(model: onnx.ModelProto, prefixes: tuple[str, ...] = FLOAT_PREFIXES) -> list[str]:
    return [n.name for n in model.graph.node if n.name.startswith(prefixes)]


def feed_float(model: onnx.ModelProto, prefixes: tuple[str, ...] = FLOAT_PREFIXES,
               names: frozenset[str] | set[str] = frozenset()) -> None:
    """Rewire inputs of the float (excluded) nodes from DequantizeLinear(QuantizeLinear(x)) to x.

    ORT routes every consumer of a quantized tensor through its DequantizeLinear, excluded nodes
    included. The features the CAE reads are also what the head compares against: comparing
    against their int8-rounded copy would add quantization noise to every anomaly map.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if not (node.name.startswith(prefixes) or node.name in names):
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    node.input[i] = q.input[0]


@dataclass
class Int8Source:
    """The FP32 graph shape-inferred once, and its activation statistics: all a quantization trial needs."""

    model_path: Path
    stats: ActivationStats
    workdir: Path

    @cached_property
    def graph(self) -> onnx.ModelProto:
        """The shape-inferred graph, read once for all trials (they only need its node names)."""
        return onnx.load(self.model_path)

    def ranges_file(self, method: str) -> Path:
        """ORT's calibration cache for `method`, written once: quantize_static then skips calibration."""
        path = self.workdir / f"ranges-{method}.json"
        if not path.exists():
            save_tensors_data(self.stats.ranges(method), path)
        return path


@contextmanager
def int8_source(fp32: onnx.ModelProto, images: np.ndarray) -> Iterator[Int8Source]:
    """Prepare and calibrate once (bounded memory, any image count); the files live until the block ends."""
    with tempfile.TemporaryDirectory(prefix="dfr-int8-") as tmp:
        src = Path(tmp) / "fp32.onnx"
        # Shape inference only: the graph is already folded, and ORT's optimizer would rename nodes.
        quant_pre_process(fp32, src, skip_optimization=True)
        yield Int8Source(src, collect_activations(src, images, list(QUANTIZED_OPS)), Path(tmp))


def quantize_int8(source: Int8Source, flavour: Int8Flavour, method: str,
                  extra_float: tuple[str, ...] = (), weight_bits: int = 8) -> onnx.ModelProto:
    """Quantize the FP32 fused graph; the float parts (flavour's and `extra_float` node names) read float inputs.

    `weight_bits` 7 is ORT's reduce_range (weights in [-64, 64]), for flavours that list it.

    TensorRT flavour: a float node simply has no Q/DQ around it; CPU flavour: it stays a float op between
    DequantizeLinear and QuantizeLinear. Either way ORT's nodes_to_exclude does it.
    """
    if method not in CALIB_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIB_METHODS)}")
    if weight_bits not in flavour.weight_bits:
        bits = " or ".join(map(str, flavour.weight_bits))
        raise ValueError(f"the {flavour.name} flavour quantizes weights to {bits} bits, not {weight_bits}")
    excluded = float_nodes(source.graph, flavour.float_prefixes) + list(extra_float)
    with tempfile.TemporaryDirectory(prefix="dfr-int8-trial-") as tmp:
        dst = Path(tmp) / "int8.onnx"
        quantize_static(
            str(source.model_path), str(dst), None,
            quant_format=flavour.quant_format,
            activation_type=flavour.activation_type,
            weight_type=flavour.weight_type,
            per_channel=flavour.per_channel,
            reduce_range=weight_bits == 7,
            op_types_to_quantize=list(flavour.quantized_ops),
            nodes_to_exclude=excluded,
            calibrate_method=CALIB_METHODS[method],
            extra_options=dict(flavour.extra_options),
            calibration_cache_path=source.ranges_file(method),
        )
        model = onnx.load(dst)
    feed_float(model, flavour.float_prefixes, set(extra_float))
    prune_unused(model)
    for output in model.graph.output:  # shape inference above rewrote the batch dim as an expression
        output.type.tensor_type.shape.dim[0].dim_param = "batch"
    return model


def prune_unused(model: onnx.ModelProto) -> None:
    """Drop nodes nothing reads any more (the Q/DQ pairs feed_float bypassed)."""
    while True:
        needed = {o.name for o in model.graph.output} | {i for n in model.graph.node for i in n.input}
        dead = [n for n in model.graph.node if not any(o in needed for o in n.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
