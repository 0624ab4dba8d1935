"""What a `--source` string means, and how to open it as an OpenCV-style capture.

A source is a camera index ("0"), a video file, an RTSP/HTTP URL, a folder of images (replayed as a
stream) or a GStreamer pipeline (anything containing "!"). Live sources (cameras, URLs, pipelines)
reconnect when they drop; recorded ones (files, folders) end. Every capture has the small surface
of cv2.VideoCapture that the capture thread uses (`read`, `get`, `isOpened`, `release`), so tests
can hand in a fake one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from dfr_edge.data.images import IMAGE_EXTENSIONS, ImageReadError, read_image

DEFAULT_FOLDER_FPS = 10.0


class Capture(Protocol):
    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def get(self, prop: int) -> float: ...

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name

    def release(self) -> None: ...


@dataclass(frozen=True)
class SourceSpec:
    text: str  # as the user gave it
    kind: str  # "camera", "file", "url", "folder" or "gstreamer"

    @property
    def live(self) -> bool:
        """A live source reconnects when it drops; a recorded one ends."""
        return self.kind in ("camera", "url", "gstreamer")


def parse_source(text: str) -> SourceSpec:
    """Classify a --source string; a missing file or folder is an error naming it."""
    if text.isdigit():
        return SourceSpec(text, "camera")
    if "!" in text:
        return SourceSpec(text, "gstreamer")
    if "://" in text:
        return SourceSpec(text, "url")
    path = Path(text)
    if path.is_dir():
        return SourceSpec(text, "folder")
    if path.is_file():
        return SourceSpec(text, "file")
    raise FileNotFoundError(f"source {text} is not a camera index, URL, GStreamer pipeline, file or folder")


def csi_pipeline(sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: int = 30) -> str:
    """Jetson CSI camera through nvarguscamerasrc, converted to BGR for OpenCV.

    `drop=true max-buffers=1` on the appsink keeps only the newest frame in GStreamer too, so lag
    cannot build up below OpenCV either (jetson-utils #32, #90).
    """
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={fps}/1, format=NV12 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! "
            f"video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false")


def v4l2_pipeline(device: str = "/dev/video0", width: int = 640, height: int = 480, fps: int = 30) -> str:
    """USB (UVC) camera through v4l2src, newest frame only, BGR for OpenCV."""
    return (f"v4l2src device={device} ! video/x-raw, width={width}, height={height}, framerate={fps}/1 ! "
            f"videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false")


class ImageFolderCapture:
    """A folder of images (sorted) replayed once as a stream at a nominal frame rate."""

    def __init__(self, folder: Path, fps: float = DEFAULT_FOLDER_FPS):
        self.files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        self.fps = fps
        self.index = 0

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return bool(self.files)

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The next readable image; unreadable files are skipped (the folder is a stand-in camera)."""
        while self.index < len(self.files):
            path = self.files[self.index]
            self.index += 1
            try:
                return True, read_image(path)
            except ImageReadError:
                continue
        return False, None

    def release(self) -> None:
        self.index = len(self.files)


def open_capture(spec: SourceSpec) -> Capture:
    """Open a source; the caller checks isOpened() (a live source may be down for a while)."""
    if spec.kind == "folder":
        return ImageFolderCapture(Path(spec.text))
    if spec.kind == "camera":
        capture = cv2.VideoCapture(int(spec.text))
    elif spec.kind == "gstreamer":
        capture = cv2.VideoCapture(spec.text, cv2.CAP_GSTREAMER)
    else:
        capture = cv2.VideoCapture(spec.text)
    if spec.live:  # OpenCV's own queue is where RTSP lag accumulates (ultralytics #11784)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return capture
