"""Latency percentiles and the running numbers of the camera loop.

Percentiles come from a window of the most recent frames: the console shows the state now, not an
average over an hour, and memory stays flat however long the loop runs (a soak keeps its own record
through `on_detection` if it needs every frame).
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

STAGES = ("capture_wait", "resize", "infer", "postprocess", "output", "frame_to_decision")
WINDOW = 1000


@dataclass(frozen=True)
class LatencySummary:
    """Milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    def to_dict(self) -> dict:
        return asdict(self)


def latency_summary(seconds: np.ndarray | list[float]) -> LatencySummary:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return LatencySummary(0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"))
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencySummary(int(ms.size), float(p50), float(p90), float(p99), float(ms.max()), float(ms.mean()))


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class LoopStats:
    """Per-stage latencies over the last WINDOW frames, frames in/out and their rates."""

    def __init__(self) -> None:
        self.recent = {stage: deque(maxlen=WINDOW) for stage in STAGES}
        self.rounds = 0
        self.frames_out = 0
        self.started = time.perf_counter()

    def add(self, stage: str, seconds: float) -> None:
        self.recent[stage].append(seconds)

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    def postfix(self, frames_in: int, dropped: int) -> str:
        """One console line: rates, then p50/p99 ms of the stages that matter to a line engineer."""
        rate = f"in {frames_in / self.elapsed():.1f}/s out {self.frames_out / self.elapsed():.1f}/s drop {dropped}"
        parts = []
        for stage, label in (("capture_wait", "wait"), ("resize", "resize"), ("infer", "infer"),
                             ("postprocess", "post"), ("frame_to_decision", "f2d")):
            if self.recent[stage]:
                s = latency_summary(list(self.recent[stage]))
                parts.append(f"{label} {s.p50:.1f}/{s.p99:.1f}")
        return f"{rate} | ms p50/p99 " + " ".join(parts)

    def summary(self, frames_in: int, dropped: int) -> dict:
        elapsed = self.elapsed()
        return {"rounds": self.rounds, "frames_in": frames_in, "frames_out": self.frames_out, "dropped": dropped,
                "seconds": elapsed, "fps_in": frames_in / elapsed, "fps_out": self.frames_out / elapsed,
                "latency_ms_last_frames": {stage: latency_summary(list(v)).to_dict()
                                           for stage, v in self.recent.items()}}
