"""The FP32 fused graph (contract 1): uint8 N x H x W x 3 BGR in; anomaly_map, score out; opset 17."""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxslim
import torch
from torch import nn

OPSET = 17
INPUT = "image"
OUTPUTS = ("anomaly_map", "score")


@dataclass(frozen=True)
class Parity:
    """Largest differences between two runs of the fused graph on the same images."""

    map_max_abs: float
    map_range: float  # max - min of the reference maps
    score_max_abs: float
    images: int

    @property
    def relative(self) -> float:
        return self.map_max_abs / max(self.map_range, 1e-12)

    def to_dict(self) -> dict:
        return {**asdict(self), "relative": self.relative}


def to_onnx(model: nn.Module, image_size: tuple[int, int]) -> onnx.ModelProto:
    """Trace with the TorchScript exporter (dynamo=False: a stable op set for TensorRT), then fold
    constants with onnxslim (the exporter leaves padding arithmetic unfolded)."""
    height, width = image_size
    dummy = torch.zeros(1, height, width, 3, dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (dummy,), buffer, dynamo=False, opset_version=OPSET,
            input_names=[INPUT], output_names=list(OUTPUTS),
            dynamic_axes={INPUT: {0: "batch"}, OUTPUTS[0]: {0: "batch"}, OUTPUTS[1]: {0: "batch"}},
            do_constant_folding=True,
        )
    return onnxslim.slim(onnx.load_from_string(buffer.getvalue()))


def compare(reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]) -> Parity:
    ref_map, ref_score = reference
    cand_map, cand_score = candidate
    return Parity(
        map_max_abs=float(np.abs(ref_map - cand_map).max()),
        map_range=float(ref_map.max() - ref_map.min()),
        score_max_abs=float(np.abs(ref_score - cand_score).max()),
        images=int(len(ref_score)),
    )
