"""Heat-map overlays that make a defect map readable by a person on the line."""

from __future__ import annotations

import cv2
import numpy as np


def heat(amap: np.ndarray, low: float, threshold: float) -> np.ndarray:
    """Map scores to 0..255 so that `low` (typical normal) is 0 and the pixel threshold is 128."""
    span = max(threshold - low, 1e-12)
    scaled = np.clip((amap - low) / (2.0 * span), 0.0, 1.0)
    return (scaled * 255.0).astype(np.uint8)


def make_overlay(
    image: np.ndarray, amap: np.ndarray, mask: np.ndarray, low: float, threshold: float, alpha: float = 0.45
) -> np.ndarray:
    """BGR image blended with a TURBO heat map; defect regions outlined in white."""
    if amap.shape != image.shape[:2]:
        amap = cv2.resize(amap, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask.astype(np.uint8), (image.shape[1], image.shape[0]),
                          interpolation=cv2.INTER_NEAREST).astype(bool)
    coloured = cv2.applyColorMap(heat(amap, low, threshold), cv2.COLORMAP_TURBO)
    out = cv2.addWeighted(image, 1.0 - alpha, coloured, alpha, 0.0)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (255, 255, 255), max(1, image.shape[0] // 256))
    return out
