"""Inputs for batch inference: image files, folders, globs and video files, as a stream of frames.

An unreadable input becomes an item with an error instead of stopping the run: a production job
over thousands of files reports the bad ones and carries on.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dfr_edge.data.images import IMAGE_EXTENSIONS, ImageReadError, read_image

log = logging.getLogger(__name__)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")


@dataclass
class Item:
    name: str  # unique, file-system safe output name
    source: str  # the file (and frame) it came from, for reports
    frame: np.ndarray | None
    error: str | None = None


@dataclass(frozen=True)
class Expanded:
    files: list[Path]
    missing: list[str]  # inputs that matched nothing


def expand_inputs(inputs: list[str]) -> Expanded:
    """Files as given, folders' images (sorted, not recursive), glob patterns (** allowed)."""
    files, missing = [], []
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
        elif path.exists():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if found:
            files.extend(found)
        else:
            missing.append(spec)
    return Expanded(files, missing)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def frame_count(path: Path) -> int:
    """Frames a source will yield (1 for an image); a guess for some video containers."""
    if not is_video(path):
        return 1
    capture = cv2.VideoCapture(str(path))
    try:
        return _announced_frames(capture)
    finally:
        capture.release()


def _announced_frames(capture: cv2.VideoCapture) -> int:
    return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))


def iter_items(files: list[Path]) -> Iterator[Item]:
    names: set[str] = set()

    def unique(stem: str) -> str:
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}_{k}", k + 1
        names.add(name)
        return name

    for path in files:
        if is_video(path):
            yield from _video_frames(path, unique)
            continue
        name = unique(path.stem)
        try:
            yield Item(name, str(path), read_image(path))
        except ImageReadError as exc:
            yield Item(name, str(path), None, exc.reason)


def _video_frames(path: Path, unique) -> Iterator[Item]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        yield Item(unique(path.stem), str(path), None, "cannot open video (unsupported codec or corrupt file)")
        return
    expected = _announced_frames(capture)
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield Item(unique(f"{path.stem}_f{index:06d}"), f"{path}#frame={index}", frame)
            index += 1
        if index == 0:
            yield Item(unique(path.stem), str(path), None, "video has no readable frames")
        elif index < expected:
            log.warning("%s: read %d of the %d frames its header announces (truncated or damaged file?)",
                        path, index, expected)
    finally:
        capture.release()
