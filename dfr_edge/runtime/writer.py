"""Outputs of batch inference: overlay and mask PNGs plus a JSON Lines record per image.

Each PNG is written to a temporary name and renamed; results.jsonl is built as a .partial file and
renamed when the run finishes, so an interrupted run never leaves a truncated file posing as done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from dfr_edge.atomic import atomic_path
from dfr_edge.runtime.detector import Detection
from dfr_edge.runtime.sources import Item


def write_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    with atomic_path(path) as tmp:
        encoded.tofile(tmp)


class ResultWriter:
    def __init__(self, out: Path, images: bool = True):
        self.out, self.images = Path(out), images
        self.count = self.anomalous = 0

    def __enter__(self) -> ResultWriter:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.images:
            (self.out / "overlays").mkdir(exist_ok=True)
            (self.out / "masks").mkdir(exist_ok=True)
        self.partial = self.out / "results.jsonl.partial"
        self.file = open(self.partial, "w")
        return self

    def _record(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")

    def write(self, item: Item, detection: Detection, overlay: np.ndarray | None) -> None:
        self.count += 1
        self.anomalous += int(detection.anomalous)
        self._record({"path": item.source, "name": item.name, "score": detection.score,
                      "anomalous": detection.anomalous, "boxes": [b.to_dict() for b in detection.boxes]})
        if self.images and overlay is not None:
            write_png(self.out / "overlays" / f"{item.name}.png", overlay)
            write_png(self.out / "masks" / f"{item.name}.png", detection.mask.astype(np.uint8) * 255)

    def failed(self, item: Item) -> None:
        self._record({"path": item.source, "name": item.name, "error": item.error})

    def __exit__(self, exc_type, exc, tb) -> None:
        self.file.close()
        if exc_type is None:
            os.replace(self.partial, self.out / "results.jsonl")
