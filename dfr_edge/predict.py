"""Run the fused torch module over an image array in batches (training thresholds, dfr-eval)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def predict_torch(model: nn.Module, images: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N x H x W x 3 BGR at the model size → (maps N x H x W float32, scores N float32)."""
    maps, scores = [], []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            amap, score = model(torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])))
            maps.append(amap.numpy())
            scores.append(score.numpy())
    return np.concatenate(maps), np.concatenate(scores)
