"""dfr-bench: latency and throughput of exported models, side by side, with the machine recorded.

A matrix over MODEL (an .onnx file, or a bundle directory: every exported variant in it plus its
torch-eager baseline when torch is installed) x --backend x --batch (x --threads). Each cell warms
up, then the targets run round-robin, call by call, so machine drift hits all alike. Two views:
"model" (the inference call on images already at the model size) and "frame" (a uint8 frame of
--frame-size in memory to a decision: resize, inference, threshold, mask and boxes, per stage).
Reports p50/p90/p99/max latency per call, images/s, p99/p50, and the ratio to the baseline. A
TensorRT .engine is loaded with CUDA-event timing: its GPU time is reported as the "gpu" stage
beside the wall-clock time (which includes the transfers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dfr_edge.cli.common import ArgumentParser, run_main


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def frame_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT (as cameras are described) -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    return height, width


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="dfr-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL", help=".onnx or .engine files, bundle directories, or "
                   "triton://HOST:8001/NAME")
    p.add_argument("--backend", action="append", help="ENGINE[:PROVIDER], repeatable or comma-separated "
                   "(default onnxruntime:cpu)")
    p.add_argument("--batch", type=int_list, default=[1], help="batch sizes, e.g. 1,4,16 (default 1)")
    p.add_argument("--threads", type=int_list, help="inference thread counts to compare, e.g. 1,2 "
                   "(default: the cores not busy with other processes right now)")
    duration = p.add_mutually_exclusive_group()
    duration.add_argument("--duration", type=float, default=5.0, help="seconds per (view, batch) cell, all cells interleaved (default 5)")
    duration.add_argument("--iterations", type=int, help="timed calls per target per cell")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per target before each cell")
    p.add_argument("--block", type=int, default=5, help="timed calls per target per turn of the round-robin "
                   "(default 5; 1 with --settle 0 alternates call by call)")
    p.add_argument("--settle", type=int, default=2, help="untimed calls per target at the start of each turn, "
                   "so the other targets' cache and thread state is not timed (default 2)")
    p.add_argument("--views", default="model,frame", help="model, frame or both (default model,frame)")
    p.add_argument("--frame-size", type=frame_size, default=(480, 640), help="camera frame WIDTHxHEIGHT "
                   "for the frame view (default 640x480)")
    p.add_argument("--no-baseline", action="store_true", help="skip the torch-eager baseline")
    p.add_argument("--json", type=Path, help="write all results (and raw samples) as JSON")
    p.add_argument("--markdown", type=Path, help="write the tables as Markdown")
    p.add_argument("--plot", type=Path, help="write a PNG: latency vs batch, and a latency histogram")
    return p


@run_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from dfr_edge.bench import Plan, build_targets, environment, make_frames, measure, report, write_outputs
    from dfr_edge.bench.results import markdown
    from dfr_edge.runtime.camera.engine_choice import parse_backend

    views = tuple(v.strip() for v in args.views.split(",") if v.strip())
    if not views or set(views) - {"model", "frame"}:
        raise ValueError(f"--views takes model, frame or both, got {args.views!r}")
    if (args.duration <= 0 or (args.iterations is not None and args.iterations < 1) or args.block < 1
            or min(args.warmup, args.settle) < 0):
        raise ValueError("--duration, --iterations and --block must be positive, --warmup and --settle not negative")
    backends = [parse_backend(b) for spec in (args.backend or ["onnxruntime"]) for b in spec.split(",") if b]
    plan = Plan(batches=tuple(args.batch), views=views, warmup=args.warmup, block=args.block, settle=args.settle,
                iterations=args.iterations, duration=args.duration, frame_size=args.frame_size)
    targets = build_targets(args.models, backends, args.threads or [None], baseline=not args.no_baseline,
                            max_batch=max(args.batch))
    frames = make_frames(max(args.batch), *args.frame_size)
    print(f"{len(targets)} target(s) x {len(plan.batches)} batch size(s) x {len(views)} view(s)", file=sys.stderr)
    cells = measure(targets, plan, frames, progress=lambda text: print(f"timing {text}", file=sys.stderr))
    data = report(targets, cells, plan, environment())
    print(markdown(data))
    write_outputs(data, args.json, args.markdown, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
