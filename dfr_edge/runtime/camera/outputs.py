"""Where the camera loop's decisions go: annotated video, JSON Lines events, saved anomalies, a window.

Every output survives any way the loop ends (end of file, Ctrl-C, SIGTERM, an exception): videos
are written under a temporary name and renamed once the writer is closed, so a file named
`--record` always plays; events are written one whole line at a time and flushed, so the log can
be followed live and its last line is always complete. Nothing existing is overwritten without
`force`.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from dfr_edge.atomic import temp_prefix
from dfr_edge.runtime.detector import Detection, Detector
from dfr_edge.runtime.regions import Box
from dfr_edge.runtime.writer import write_png


@dataclass
class Event:
    """One decision about one frame, as written to the events log and given to on_detection."""

    timestamp: str  # UTC, ISO 8601, when the decision was made
    source: str
    source_index: int
    frame_id: int  # frames read from that source before this one (gaps = dropped frames)
    score: float
    anomalous: bool
    boxes: list[Box]
    # capture_wait, resize, infer (host-device transfer + inference), postprocess: of the round;
    # frame_to_decision: this frame, from being read to its decision
    latency_ms: dict[str, float]

    def to_dict(self) -> dict:
        return {**asdict(self), "boxes": [b.to_dict() for b in self.boxes]}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; choose another name or pass --force")


def refuse_used_folder(folder: Path, force: bool) -> None:
    """Saved anomalies go to a new or empty folder: same-named files of an earlier run would be replaced."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--save-anomalies {folder} is a file, not a folder; choose another name")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise FileExistsError(f"--save-anomalies {folder} is not empty; choose a new or empty folder, or pass "
                              f"--force to write into it (files with the same names are replaced)")


def annotate(detector: Detector, frame: np.ndarray, detection: Detection, fps: float) -> np.ndarray:
    """The overlay plus score, decision and frames/s, readable from across the line."""
    image = detector.overlay(frame, detection)
    verdict, colour = ("ANOMALY", (0, 0, 255)) if detection.anomalous else ("OK", (0, 200, 0))
    scale = max(0.5, image.shape[0] / 720)
    for row, (text, col) in enumerate(((f"{verdict}  score {detection.score:.4g}", colour),
                                       (f"{fps:.1f} fps", (255, 255, 255)))):
        org = (10, int((row + 1) * 30 * scale))
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), int(4 * scale), cv2.LINE_AA)
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, col, int(2 * scale), cv2.LINE_AA)
    return image


def record_paths(path: Path, sources: int) -> list[Path]:
    """One video per source: the name as given for one source, NAME-<i>.mp4 for several."""
    path = Path(path)
    if sources == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(sources)]


class VideoRecorder:
    """An annotated mp4 (mp4v) of one source, opened at its first frame, renamed into place on close."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = Path(path), fps
        # the project's temporary name (atomic.temp_prefix), ending in .mp4 so OpenCV picks the container
        self.partial = self.path.with_name(f"{temp_prefix(self.path)}partial{self.path.suffix}")
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.size = (image.shape[1], image.shape[0])
            self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise RuntimeError(f"cannot write video {self.path}: OpenCV has no mp4v encoder here")
        if (image.shape[1], image.shape[0]) != self.size:  # a source that came back at another size
            image = cv2.resize(image, self.size)
        self.writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            os.replace(self.partial, self.path)
            self.writer = None


class EventLog:
    """JSON Lines, one event per line, flushed line by line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "w", encoding="utf-8")

    def write(self, event: Event) -> None:
        self.file.write(json.dumps(event.to_dict()) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class AnomalySaver:
    """For each anomalous frame: the frame, its mask (255 = defect) and its overlay, as PNGs."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.saved = 0

    def write(self, event: Event, frame: np.ndarray, detection: Detection, overlay: np.ndarray) -> None:
        stem = f"src{event.source_index}-{event.frame_id:08d}"
        write_png(self.folder / f"{stem}.png", frame)
        write_png(self.folder / f"{stem}_mask.png", detection.mask.astype(np.uint8) * 255)
        write_png(self.folder / f"{stem}_overlay.png", overlay)
        self.saved += 1


WINDOW_PROBE = "dfr-camera"


class Window:
    """One OpenCV window per source; q or Esc asks the loop to stop. Needs a display (not headless)."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.titles: set[str] = set()
        try:  # fail before the first frame, with the remedy, rather than on it
            cv2.namedWindow(WINDOW_PROBE, cv2.WINDOW_NORMAL)
            cv2.destroyWindow(WINDOW_PROBE)
        except cv2.error:
            raise RuntimeError("cannot open a window: this OpenCV has no GUI support (opencv-python-headless) "
                               "or there is no display; pass --headless") from None

    def show(self, title: str, image: np.ndarray) -> None:
        cv2.imshow(title, image)
        self.titles.add(title)

    def poll(self) -> None:
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stop.set()

    def close(self) -> None:
        if self.titles:
            cv2.destroyAllWindows()
