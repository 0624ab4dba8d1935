"""The FP16 variant: backbone, regional features and CAE in float16; I/O and head in float32.

Precision is encoded in the ONNX itself (the only path that builds the same on TensorRT 10.3 and
11.x, see ARCHITECTURE.md). It is traced from a half-precision copy of the module rather than
converted after the fact, so the casts sit exactly at the head boundary and no constant is clipped.
"""

from __future__ import annotations

import copy

import onnx
import torch
from torch import nn

from dfr_edge.export.onnx_fp32 import to_onnx
from dfr_edge.model import DFRModel


class HalfBody(nn.Module):
    """The fused module with its body in float16; `head` keeps its name for the /head/ prefix."""

    def __init__(self, model: DFRModel):
        super().__init__()
        self.preprocess = model.extractor.preprocess
        self.backbone = copy.deepcopy(model.extractor.backbone).half()
        self.regional = copy.deepcopy(model.extractor.regional).half()
        self.cae = copy.deepcopy(model.cae).half()
        self.head = model.head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.regional(self.backbone(self.preprocess(images).half()))
        reconstruction = self.cae(features)
        return self.head(features.float(), reconstruction.float())


def to_fp16_onnx(model: DFRModel) -> onnx.ModelProto:
    return to_onnx(HalfBody(model).eval(), model.extractor.image_size)
