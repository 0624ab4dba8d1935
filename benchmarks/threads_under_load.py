"""How many threads to use when other processes share the cores (how `--threads`' default was chosen).

    python benchmarks/threads_under_load.py [--rounds 5] [--busy 1]

Times the two CPU-heavy parts of training with 1 and 2 torch threads, in interleaved rounds: CAE
optimizer steps (the default model's C = 272, d = 48, 256 positions per step) and one backbone
forward pass (EfficientNet-Lite0, 8 images of 256 x 256). Each round runs once as the machine is and
once with --busy extra processes spinning on the cores (what a camera box or a shared build machine
does to a job). Prints medians, writes benchmarks/results/threads_under_load.json with the load
average seen, because on a shared machine the "idle" case is not idle.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dfr_edge.backbones import build_backbone
from dfr_edge.cae import CAE
from dfr_edge.report import format_table, machine_info, write_json
from dfr_edge.threads import default_threads

HERE = Path(__file__).resolve().parent
THREAD_COUNTS = (1, 2)


def spin() -> None:
    while True:
        pass


def cae_steps_per_s(steps: int = 100) -> float:
    torch.manual_seed(0)
    cae = CAE(272, 48).train()
    optimizer = torch.optim.Adam(cae.parameters(), lr=1e-3)
    rows = torch.randn(256, 272)
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.mse_loss(cae.forward_rows(rows), rows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps / (time.perf_counter() - start)


def backbone_images_per_s(module: torch.nn.Module, images: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        module(images)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--busy", type=int, default=1, help="spinning processes in the loaded condition")
    p.add_argument("--out", type=Path, default=HERE / "results" / "threads_under_load.json")
    args = p.parse_args()
    backbone = build_backbone("efficientnet_lite0").module
    images = torch.rand(8, 3, 256, 256)
    samples: dict[tuple[str, int, str], list[float]] = {}
    loads = []
    for _ in range(args.rounds):
        for condition in ("as is", f"+{args.busy} busy"):
            spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)] \
                if condition != "as is" else []
            for s in spinners:
                s.start()
            loads.append(os.getloadavg()[0])
            try:
                for threads in THREAD_COUNTS:
                    torch.set_num_threads(threads)
                    samples.setdefault(("CAE steps/s", threads, condition), []).append(cae_steps_per_s())
                    samples.setdefault(("backbone images/s", threads, condition), []).append(
                        backbone_images_per_s(backbone, images))
            finally:
                for s in spinners:
                    s.terminate()
                    s.join()
    rows = [[what, threads, condition, round(statistics.median(values), 1)]
            for (what, threads, condition), values in samples.items()]
    print(format_table(["measure", "threads", "machine", "median"], rows))
    print(f"1-minute load average during the runs: {min(loads):.1f} to {max(loads):.1f}; "
          f"default_threads() now: {default_threads()}")
    write_json(args.out, {"machine": machine_info(), "load_average_1min": loads, "rounds": args.rounds,
                          "busy": args.busy, "rows": [dict(zip(["measure", "threads", "machine", "median"], r))
                                                      for r in rows]})


if __name__ == "__main__":
    main()
