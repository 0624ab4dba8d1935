"""The image score rule: how one number per image is read from the anomaly map (torch-free).

Shared by the head that computes it in the graph (model.py), the configuration that names it, and
anything that reads `head.score` from dfr.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# TensorRT's TopK takes K <= 3840 (onnx-tensorrt operators.md); larger K would not build an engine.
TRT_TOPK_LIMIT = 3840


@dataclass(frozen=True)
class ScoreRule:
    """How the image score summarises the map: its max, the mean of its top `k` values, or its `q` quantile.

    The max is one pixel and so fragile on textures, where one noisy position decides; averaging the top
    values or taking a high quantile looks at an area instead. Written as "max", "topk:K" (K pixels) or
    "quantile:Q" (0 < Q < 1, numpy's method="higher": a value of the map, no interpolation).
    """

    rule: str = "max"
    value: float = 0.0

    @classmethod
    def parse(cls, text: str) -> ScoreRule:
        name, _, arg = str(text).strip().partition(":")
        try:
            if name == "max" and not arg:
                return cls()
            if name == "topk" and int(arg) >= 1 and str(int(arg)) == arg:
                return cls("topk", int(arg))
            if name == "quantile" and 0.0 < float(arg) < 1.0:
                return cls("quantile", float(arg))
        except ValueError:
            pass
        raise ValueError(f"image score rule {text!r}: expected 'max', 'topk:K' (K >= 1 pixels) or 'quantile:Q' "
                         "(0 < Q < 1), e.g. 'topk:100'")

    @classmethod
    def from_manifest(cls, meta: dict) -> ScoreRule:
        """The rule a dfr.json names (bundles older than the field score by the max)."""
        return cls.parse(meta.get("head", {}).get("score", "max"))

    def of(self, amap: np.ndarray) -> float:
        """The rule applied on the host, as the graph applies it: for the unpadded part of a letterboxed
        input, whose graph score also read the padding."""
        values = np.asarray(amap, np.float32).ravel()
        count = min(self.top_count(values.size), values.size)
        top = np.partition(values, values.size - count)[values.size - count:]
        return float(top.mean() if self.rule == "topk" else top.min())

    def __str__(self) -> str:
        return {"max": "max", "topk": f"topk:{int(self.value)}", "quantile": f"quantile:{self.value:g}"}[self.rule]

    def top_count(self, pixels: int) -> int:
        """How many of the largest map values the rule reads (1 for max)."""
        if self.rule == "topk":
            return int(self.value)
        if self.rule == "quantile":
            return pixels - math.ceil(self.value * (pixels - 1))  # rank of numpy's "higher" quantile from the top
        return 1


def score_problem(value: object) -> str | None:
    """A configuration rule (rules.Rule): None when `value` is a valid score rule, else what is wrong."""
    try:
        ScoreRule.parse(value)
    except ValueError as exc:
        return f"is not valid: {exc}"
    return None
