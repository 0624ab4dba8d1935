"""The lean runtime: numpy + OpenCV + one inference engine, and no torch.

    from dfr_edge.runtime import load_detector
    detector = load_detector("bundle/model.int8-cpu.onnx")
    detection = detector.detect(frame)   # score, anomalous, anomaly_map, mask, boxes (a list gives a list)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfr_edge.runtime.backend import Backend, load_backend
from dfr_edge.runtime.detector import Detection, Detector


def load_detector(path: Path | str, *, pixel_threshold: float | None = None,
                  image_threshold: float | None = None, **backend_options: Any) -> Detector:
    """A detector over an exported model; thresholds default to the ones stored with it."""
    return Detector(load_backend(path, **backend_options), pixel_threshold, image_threshold)


__all__ = ["Backend", "Detection", "Detector", "load_backend", "load_detector"]
