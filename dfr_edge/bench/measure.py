"""Timing the matrix: warm-up, then round-robin over every target of every cell so machine drift hits all alike.

Round-robin in short blocks, not call by call: each turn a target first makes `settle` untimed calls,
then `block` timed ones. Measured on the 2-core development machine (benchmarks/README.md), two ONNX
Runtime sessions called alternately each took about twice as long as called back to back (FP32 28 ms
against 15, INT8 20 against 11): the first two or three calls after a switch pay for the other model's
weights in the caches and its idle threads. A camera loop or a server calls one model back to back, so
that is what a turn measures; turns still alternate often enough for drift to hit all targets alike.

Two views of the same artefact:
- "model": the inference call alone, on uint8 images already at the model size;
- "frame": frame to decision, a uint8 frame of the camera's size in memory through
  Detector.detect (resize -> inference -> threshold -> mask and boxes), with its stages timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from dfr_edge.bench.targets import Target
from dfr_edge.data.images import resize_image

VIEWS = ("model", "frame")


@dataclass(frozen=True)
class Plan:
    batches: tuple[int, ...] = (1,)
    views: tuple[str, ...] = VIEWS
    warmup: int = 3  # calls per target and cell before timing starts
    block: int = 5  # timed calls per target per turn of the round-robin
    settle: int = 2  # untimed calls per target at the start of each turn (see the module docstring)
    iterations: int | None = None  # timed calls per target per cell...
    duration: float = 5.0  # ...or seconds per cell, shared by all targets (the matrix takes cells x this)
    frame_size: tuple[int, int] = (480, 640)  # height, width of the camera frame in the "frame" view


@dataclass
class Cell:
    """All timed calls of one target in one (view, batch) cell, in seconds."""

    target: Target
    view: str
    batch: int
    calls: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)


def make_frames(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Textured uint8 BGR frames (smoothed noise, not constant: some kernels are data dependent)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        noise = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        frames.append(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC))
    return frames


def measure(targets: Sequence[Target], plan: Plan, frames: Sequence[np.ndarray],
            progress: Callable[[str], None] = lambda text: None) -> list[Cell]:
    """Every target in every (view, batch) cell, all interleaved in turns of `plan.block` calls.

    Each round gives every target of every cell one turn, so a slow minute of the machine hits every
    cell alike. Cells timed one after the other let it land in one cell of one run: two runs of
    dfr-bench on the 2-core development machine differed by up to 46% in one cell and 4% in the next
    (benchmarks/README.md: "dfr-bench twice in a row").
    """
    slots: list[tuple[Cell, Callable[[Cell | None], None]]] = []
    for batch in plan.batches:
        chosen = [frames[i % len(frames)] for i in range(batch)]
        slots += [(Cell(t, view, batch), _call(t, view, chosen)) for view in plan.views for t in targets]
    for _, call in slots:
        for _ in range(plan.warmup):
            call(None)
    progress(f"{len(plan.views)} view(s) x {len(plan.batches)} batch size(s) x {len(targets)} target(s), in turns")
    seconds = plan.duration * len(plan.views) * len(plan.batches)
    started, rounds, timed = time.perf_counter(), 0, 0
    while _more(plan, timed, time.perf_counter() - started, seconds):
        start = rounds % len(slots)
        turn = plan.block if plan.iterations is None else min(plan.block, plan.iterations - timed)
        for cell, call in slots[start:] + slots[:start]:  # no target always first
            for _ in range(plan.settle):
                call(None)
            for _ in range(turn):
                call(cell)
        rounds, timed = rounds + 1, timed + turn
    return [cell for cell, _ in slots]


def _more(plan: Plan, timed: int, elapsed: float, seconds: float) -> bool:
    """`timed`: calls timed so far per target and cell; `seconds`: the whole matrix's time."""
    if plan.iterations is not None:
        return timed < plan.iterations
    return timed < 3 or elapsed < seconds


def _call(target: Target, view: str, frames: list[np.ndarray]) -> Callable[[Cell | None], None]:
    """One timed call of a target in a view, recording into a cell (None: warm-up, not recorded)."""
    detector = target.detector
    if view == "model":
        images = np.stack([resize_image(f, *detector.size) for f in frames])

        def model_call(cell: Cell | None) -> None:
            start = time.perf_counter()
            detector.infer(images)
            if cell is not None:
                cell.calls.append(time.perf_counter() - start)
                _record_gpu_time(detector, cell)

        return model_call

    def frame_call(cell: Cell | None) -> None:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        detector.detect(frames, timings)
        if cell is not None:
            cell.calls.append(time.perf_counter() - start)
            for stage, seconds in timings.items():
                cell.stages.setdefault(stage, []).append(seconds)
            _record_gpu_time(detector, cell)

    return frame_call


def _record_gpu_time(detector, cell: Cell) -> None:
    """GPU backends loaded with time_gpu measure their call with CUDA events (`last_gpu_ms`): kept as
    the "gpu" stage beside the wall-clock time, which also holds the transfers and the host's work."""
    gpu_ms = getattr(detector.backend, "last_gpu_ms", None)
    if gpu_ms is not None:
        cell.stages.setdefault("gpu", []).append(gpu_ms / 1000.0)
