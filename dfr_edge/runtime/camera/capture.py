"""One capture thread per source that keeps only the newest frame.

A model slower than its camera must never build a backlog (the lag users of other toolkits
complain about: PEERS.md §2.4), so the thread overwrites an unread frame instead of queueing it
and counts it as dropped. A live source that stops delivering is reopened with growing pauses; a
file or folder ends the stream. A video file is read at its own frame rate unless told otherwise,
so it can stand in for a camera.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from dfr_edge.runtime.camera.sources import Capture, SourceSpec, open_capture

log = logging.getLogger(__name__)
DEFAULT_FILE_FPS = 30.0


@dataclass
class Frame:
    source: int  # index of the source in the loop
    frame_id: int  # frames read from that source before this one
    image: np.ndarray
    captured: float  # time.perf_counter() when it was read


@dataclass(frozen=True)
class Reconnect:
    """Pauses between attempts to reopen a dropped live source: first_delay, doubling to max_delay."""

    first_delay: float = 0.5
    max_delay: float = 10.0
    max_attempts: int | None = None  # None: keep trying until the loop stops


class LatestFrame:
    """A one-frame mailbox: a new frame replaces an unread one, which is counted as dropped.

    With `every_frame` the writer waits for the reader instead (replaying a file frame by frame).
    """

    def __init__(self, every_frame: bool = False):
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.every_frame = every_frame
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self.every_frame:
                self._cond.wait_for(lambda: self._frame is None or self._closed)
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def take(self, timeout: float) -> Frame | None:
        """The newest unread frame, waiting up to `timeout` s; None if there was none in time."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def ended(self) -> bool:
        """Closed and nothing left to read."""
        with self._cond:
            return self._closed and self._frame is None


class CaptureThread(threading.Thread):
    """Reads one source into a LatestFrame until the source ends, gives up, or `stop` is set."""

    def __init__(self, index: int, spec: SourceSpec, stop: threading.Event, *, pace: bool = True,
                 every_frame: bool = False, reconnect: Reconnect = Reconnect(),
                 opener: Callable[[SourceSpec], Capture] = open_capture):
        super().__init__(name=f"capture-{index}", daemon=True)
        self.index, self.spec, self.stop, self.reconnect, self.opener = index, spec, stop, reconnect, opener
        self.frames = LatestFrame(every_frame)
        self.read_count = 0
        self.reconnects = 0
        self.capture = opener(spec)  # opened here so that a bad source fails before the loop starts
        if not self.capture.isOpened():
            self.capture.release()
            raise RuntimeError(f"cannot open source {spec.text} ({spec.kind}); check the device, URL or file")
        fps = self.capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FILE_FPS
        self.fps = fps if 0 < fps < 1000 else DEFAULT_FILE_FPS
        self.interval = 1.0 / self.fps if pace and not spec.live else 0.0

    def run(self) -> None:
        capture: Capture | None = self.capture
        next_due = time.perf_counter()
        try:
            while capture is not None and not self.stop.is_set():
                if self.interval:
                    next_due = self._wait_until(next_due)
                ok, image = capture.read()
                if not ok or image is None:
                    capture.release()
                    capture = self._reopen() if self.spec.live else None
                    continue
                self.frames.put(Frame(self.index, self.read_count, image, time.perf_counter()))
                self.read_count += 1
        finally:
            if capture is not None:
                capture.release()
            self.frames.close()

    def _wait_until(self, due: float) -> float:
        """Sleep to the frame's due time; the next one is due an interval later (never in the past)."""
        now = time.perf_counter()
        if due > now:
            self.stop.wait(due - now)
        return max(due, now) + self.interval

    def _reopen(self) -> Capture | None:
        delay, attempt = self.reconnect.first_delay, 0
        while not self.stop.is_set():
            attempt += 1
            if self.reconnect.max_attempts is not None and attempt > self.reconnect.max_attempts:
                log.error("source %s: gave up after %d reconnection attempts", self.spec.text, attempt - 1)
                return None
            log.warning("source %s dropped; reconnecting in %.1f s (attempt %d)", self.spec.text, delay, attempt)
            if self.stop.wait(delay):
                return None
            capture = self.opener(self.spec)
            if capture.isOpened():
                self.reconnects += 1
                log.warning("source %s reconnected", self.spec.text)
                return capture
            capture.release()
            delay = min(delay * 2.0, self.reconnect.max_delay)
        return None

    @property
    def dropped(self) -> int:
        return self.frames.dropped
