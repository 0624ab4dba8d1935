"""The live inspection loop: newest frame of every source -> one inference call -> decisions out.

Each round takes the newest unread frame of each source (waiting for one if none is new yet), runs
them through the detector as one batch, then hands every decision to the outputs and to
`on_detection`. Capture runs on its own threads, so the loop never works on stale frames and a
slow model costs dropped frames (counted), never growing lag. With two rounds in flight the next
round is taken shortly before the running inference should end and resized while it runs, then
inferred while the previous round is post-processed and emitted: the engine stays busy, one
inference at a time, and frames are as fresh as with one round in flight. Decisions still reach
the outputs in the order their frames were taken.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dfr_edge.runtime.backend import Backend
from dfr_edge.runtime.camera.capture import CaptureThread, Frame, Reconnect
from dfr_edge.runtime.camera.outputs import (
    AnomalySaver,
    Event,
    EventLog,
    VideoRecorder,
    Window,
    annotate,
    record_paths,
    refuse_existing,
    refuse_used_folder,
    utc_now,
)
from dfr_edge.runtime.camera.sources import Capture, SourceSpec, open_capture
from dfr_edge.runtime.camera.stats import LoopStats, rss_mb
from dfr_edge.runtime.detector import Detection, Detector

log = logging.getLogger(__name__)
OnDetection = Callable[[Event, np.ndarray, Detection], None]
STATUS_EVERY_S = 0.5


@dataclass
class CameraConfig:
    max_frames: int | None = None  # stop after this many decisions
    fps_limit: float | None = None  # at most this many rounds per second
    pace: bool = True  # read files and folders at their own frame rate (False: as fast as possible)
    every_frame: bool = False  # files: wait for the model instead of dropping frames
    in_flight: int = 1  # rounds in flight: 2 overlaps one round's resize and post-processing with the
    #     other's inference, one inference at a time (needs a backend that may be called from two threads,
    #     e.g. ONNX Runtime); it pays where inference leaves a core free (benchmarks/README.md)
    frame_timeout: float = 1.0  # how long a round waits for a source's next frame
    reconnect: Reconnect = field(default_factory=Reconnect)


@dataclass
class CameraOutputs:
    record: Path | None = None  # annotated mp4 (one per source: NAME-<i>.mp4 when several)
    events: Path | None = None  # JSON Lines, one event per decision
    save_anomalies: Path | None = None  # folder for frames, masks and overlays of anomalies
    window: bool = False  # show an OpenCV window per source
    force: bool = False  # overwrite existing record/events files, write into a used anomalies folder

    def check(self, sources: int) -> None:
        """Refuse to overwrite before any camera is opened."""
        for path in ([*record_paths(self.record, sources)] if self.record else []) + (
                [self.events] if self.events else []):
            refuse_existing(Path(path), self.force)
        if self.save_anomalies:
            refuse_used_folder(Path(self.save_anomalies), self.force)


def run_camera(detector: Detector, sources: Sequence[SourceSpec], config: CameraConfig = CameraConfig(),
               outputs: CameraOutputs = CameraOutputs(), on_detection: OnDetection | None = None,
               stop: threading.Event | None = None, progress: bool = False,
               opener: Callable[[SourceSpec], Capture] = open_capture) -> dict:
    """Run until every source ended, max_frames decisions were made, or `stop` is set; return a summary.

    Outputs are closed (videos playable, logs complete) however the loop ends.
    """
    if not sources:
        raise ValueError("at least one source is needed")
    if config.in_flight < 1:
        raise ValueError("in_flight must be at least 1")
    outputs.check(len(sources))
    stop = stop or threading.Event()
    halt = threading.Event()  # stops the capture threads, whatever ended the loop
    with ExitStack() as cleanup:
        if _on_host_cores(detector.backend):
            cleanup.enter_context(_single_threaded_opencv())
        readers = []
        for i, spec in enumerate(sources):
            reader = CaptureThread(i, spec, halt, pace=config.pace, every_frame=config.every_frame,
                                   reconnect=config.reconnect, opener=opener)
            readers.append(reader)
            cleanup.callback(_finish, reader)
        sinks = _Sinks(outputs, readers, config, stop, cleanup)
        for reader in readers:
            reader.start()
        return _Loop(detector, readers, config, sinks, on_detection, stop, progress).run()


def _on_host_cores(backend: Backend) -> bool:
    """Whether inference runs on this machine's CPU cores (ONNX Runtime's CPU provider, torch on CPU)."""
    return backend.name.endswith("CPUExecutionProvider") or backend.name.startswith("torch:cpu")


@contextmanager
def _single_threaded_opencv():
    """OpenCV on one thread while the loop runs: the inference engine already uses every core it was
    given, and OpenCV's helper threads waking next to it (resize, regions) made the loop slower and
    less steady (median loop/model-only 0.89 with OpenCV's 2 threads, per turn 0.74-1.12, against
    0.90, per turn 0.88-0.96, on one; benchmarks/README.md: "Camera loop targets")."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _finish(reader: CaptureThread) -> None:
    reader.stop.set()
    reader.frames.close()  # wakes a reader waiting for the consumer
    if reader.ident is None:  # never started (a later source failed to open)
        reader.capture.release()
    elif reader.is_alive():
        reader.join(timeout=2.0)  # a capture stuck in read() is a daemon thread: do not hang on it


class _Sinks:
    """The outputs opened for one run, each registered for closing the moment it is opened."""

    def __init__(self, outputs: CameraOutputs, readers: list[CaptureThread], config: CameraConfig,
                 stop: threading.Event, cleanup: ExitStack):
        self.window = cleanup.enter_context(closing(Window(stop))) if outputs.window else None  # may fail: first
        self.recorders: list[VideoRecorder] = []
        if outputs.record:
            for path, reader in zip(record_paths(outputs.record, len(readers)), readers):
                fps = min(reader.fps, config.fps_limit) if config.fps_limit else reader.fps
                self.recorders.append(cleanup.enter_context(closing(VideoRecorder(path, fps))))
        self.events = cleanup.enter_context(closing(EventLog(outputs.events))) if outputs.events else None
        self.saver = AnomalySaver(outputs.save_anomalies) if outputs.save_anomalies else None
        self.annotated = bool(self.recorders or self.saver or self.window)


@dataclass
class _Round:
    frames: list[Frame]  # the newest frame of each source that had one
    capture_wait: float  # seconds spent waiting for them


class _SharedEngine:
    """The backend as the rounds in flight share it: one inference at a time (two would compete for
    the cores, each already using every thread it was given), and when the running one should end,
    so that the next round's frame can be taken as late as still keeps the engine busy."""

    def __init__(self, backend: Backend):
        self._backend = backend
        self._one_at_a_time = threading.Lock()
        self._changed = threading.Condition()
        self.calls = 0  # inference calls started
        self.started = 0.0  # when the latest one started (time.perf_counter())
        self.seconds: deque[float] = deque(maxlen=50)  # how long recent calls took

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._one_at_a_time:
            with self._changed:
                self.calls += 1
                self.started = time.perf_counter()
                self._changed.notify_all()
            try:
                return self._backend.infer(images)
            finally:
                self.seconds.append(time.perf_counter() - self.started)

    def expected_end(self, calls_before: int, round_done: Future) -> float | None:
        """When the first inference started after `calls_before` should end (the median of recent calls);
        None if its round ended without one (failed, or nothing to infer) or nothing is known yet."""
        def wake(_: Future) -> None:
            with self._changed:
                self._changed.notify_all()

        round_done.add_done_callback(wake)
        with self._changed:
            self._changed.wait_for(lambda: self.calls > calls_before or round_done.done())
            if self.calls <= calls_before or not self.seconds:
                return None
            return self.started + float(np.median(self.seconds))


class _Loop:
    def __init__(self, detector: Detector, readers: list[CaptureThread], config: CameraConfig, sinks: _Sinks,
                 on_detection: OnDetection | None, stop: threading.Event, progress: bool):
        self.engine = None
        if config.in_flight > 1:
            detector = copy.copy(detector)
            detector.backend = self.engine = _SharedEngine(detector.backend)
        self.detector, self.readers, self.config, self.sinks = detector, readers, config, sinks
        self.on_detection, self.stop, self.progress = on_detection, stop, progress
        self.stats = LoopStats()
        self.dispatched = 0  # frames sent to the detector (decided or in flight)
        self.callback_errors = 0

    def run(self) -> dict:
        from tqdm import tqdm

        bar = tqdm(total=self.config.max_frames, unit="frame", desc="camera", disable=not self.progress,
                   dynamic_ncols=True)
        last_status = 0.0
        pending: deque[tuple[_Round, Future]] = deque()  # rounds in flight, emitted in the order taken
        try:
            workers = ThreadPoolExecutor(self.config.in_flight, thread_name_prefix="detect") if self.engine else None
            with workers or nullcontext():
                while not self.stop.is_set() and not self._enough():
                    started = time.perf_counter()
                    batch = self._newest_frames()
                    if batch is None:
                        break
                    if batch.frames:
                        self.dispatched += len(batch.frames)
                        calls = self.engine.calls if self.engine else 0
                        pending.append((batch, self._start(workers, batch.frames)))
                    while pending and (len(pending) >= self.config.in_flight or not batch.frames):
                        self._emit_round(*pending.popleft())
                        bar.update(self.stats.frames_out - bar.n)
                    if time.perf_counter() - last_status > STATUS_EVERY_S:
                        bar.set_postfix_str(self.stats.postfix(*self._counts()), refresh=False)
                        last_status = time.perf_counter()
                    if self.engine and pending and batch.frames:
                        self._wait_to_take_late(calls, pending[-1][1])
                    if self.config.fps_limit:
                        self.stop.wait(max(0.0, started + 1.0 / self.config.fps_limit - time.perf_counter()))
                while pending:  # decisions already computed still reach every output
                    self._emit_round(*pending.popleft())
        finally:
            bar.update(self.stats.frames_out - bar.n)
            bar.close()
        return self._summary()

    def _wait_to_take_late(self, calls_before: int, latest: Future) -> None:
        """Take the next round when its resize should end as the running inference does: the engine
        stays busy, and the frame is as fresh as with one round in flight (not an inference older)."""
        end = self.engine.expected_end(calls_before, latest)
        resizes = self.stats.recent["resize"]
        if end is not None and resizes:
            self.stop.wait(max(0.0, end - float(np.median(resizes)) - time.perf_counter()))

    def _enough(self) -> bool:
        return self.config.max_frames is not None and self.dispatched >= self.config.max_frames

    def _newest_frames(self) -> _Round | None:
        """One new frame per live source (none if none came in time); None when every source ended."""
        active = [r for r in self.readers if not r.frames.ended]
        if not active:
            return None
        started = time.perf_counter()
        frames = [f for r in active if (f := r.frames.take(self.config.frame_timeout)) is not None]
        if self.config.max_frames is not None:
            frames = frames[: self.config.max_frames - self.dispatched]
        return _Round(frames, time.perf_counter() - started)

    @staticmethod
    def _inline(work: Callable[[], object]) -> Future:
        """`work` run now, on this thread, as a finished Future."""
        done: Future = Future()
        try:
            done.set_result(work())
        except Exception as exc:
            done.set_exception(exc)
        return done

    def _start(self, workers: ThreadPoolExecutor | None, frames: list[Frame]) -> Future:
        """Two rounds in flight: on a worker. One: right here, with no hand-off between threads to pay
        per frame (two wake-ups, which cost most while the inference threads still hold the cores)."""
        if workers is None:
            return self._inline(lambda: self._detect(frames))
        return workers.submit(self._detect, frames)

    def _detect(self, frames: list[Frame]) -> tuple[list[Detection], dict[str, float], float]:
        """The decisions, the detector's stage times, when they were made."""
        timings: dict[str, float] = {}
        detections = self.detector.detect([f.image for f in frames], timings)
        return detections, timings, time.perf_counter()

    def _emit_round(self, batch: _Round, future: Future) -> None:
        detections, timings, decided = future.result()
        emitting = time.perf_counter()
        self.stats.add("capture_wait", batch.capture_wait)
        round_ms = {"capture_wait": batch.capture_wait * 1000.0}
        for stage in ("resize", "infer", "postprocess"):
            self.stats.add(stage, timings.get(stage, 0.0))
            round_ms[stage] = timings.get(stage, 0.0) * 1000.0
        fps = self.stats.frames_out / self.stats.elapsed()
        for frame, detection in zip(batch.frames, detections):
            to_decision = decided - frame.captured
            self.stats.add("frame_to_decision", to_decision)
            event = Event(utc_now(), self.readers[frame.source].spec.text, frame.source, frame.frame_id,
                          detection.score, detection.anomalous, detection.boxes,
                          {**round_ms, "frame_to_decision": to_decision * 1000.0})
            self._emit(event, frame, detection, fps)
        if self.sinks.window:
            self.sinks.window.poll()
        self.stats.add("output", time.perf_counter() - emitting)
        self.stats.frames_out += len(batch.frames)
        self.stats.rounds += 1

    def _emit(self, event: Event, frame: Frame, detection: Detection, fps: float) -> None:
        sinks = self.sinks
        image = annotate(self.detector, frame.image, detection, fps) if sinks.annotated else None
        if sinks.recorders:
            sinks.recorders[frame.source].write(image)
        if sinks.events:
            sinks.events.write(event)
        if sinks.saver and detection.anomalous:
            sinks.saver.write(event, frame.image, detection, image)
        if sinks.window:
            sinks.window.show(f"dfr-camera {event.source}", image)
        if self.on_detection is not None:
            try:
                self.on_detection(event, frame.image, detection)
            except Exception as exc:  # a failing PLC hook must not stop the inspection
                self.callback_errors += 1
                if self.callback_errors == 1:
                    log.error("on_detection failed (counted, further failures not shown): %s", exc)

    def _counts(self) -> tuple[int, int]:
        return sum(r.read_count for r in self.readers), sum(r.dropped for r in self.readers)

    def _summary(self) -> dict:
        summary = self.stats.summary(*self._counts())
        summary["sources"] = [{"source": r.spec.text, "kind": r.spec.kind, "frames_read": r.read_count,
                               "dropped": r.dropped, "reconnects": r.reconnects} for r in self.readers]
        summary["callback_errors"] = self.callback_errors
        summary["in_flight"] = self.config.in_flight
        summary["rss_mb"] = rss_mb()
        summary["recorded"] = [{"path": str(r.path), "frames": r.frames} for r in self.sinks.recorders]
        summary["anomalies_saved"] = self.sinks.saver.saved if self.sinks.saver else 0
        return summary
