"""dfr-demo: the whole pipeline on the embedded synthetic dataset, no download needed.

Builds a defect dataset from a scikit-image texture, trains the default model, evaluates it,
exports FP32 and both INT8 flavours, evaluates those, and writes heat-map overlays under --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dfr_edge.cli.common import ArgumentParser, add_threads_option, run_main
from dfr_edge.report import format_table


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="dfr-demo", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="working folder (default runs/demo)")
    p.add_argument("--texture", default="brick", help="brick (default), grass or gravel")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="CAE optimizer steps (default: the training default)")
    p.add_argument("--force", action="store_true",
                   help="replace a bundle at DIR/bundle that an earlier demo in DIR did not make (never a non-bundle)")
    add_threads_option(p)
    return p


@run_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from dfr_edge.outputs import check_demo_target, writing

    check_demo_target(args.out, args.force)  # before torch loads and minutes of work
    args.out.mkdir(parents=True, exist_ok=True)
    with writing(args.out, "dfr-demo"), writing(args.out / "bundle", "dfr-demo"):
        from dfr_edge.config import TrainConfig
        from dfr_edge.data.synthetic import SyntheticSpec
        from dfr_edge.demo import run_demo
        from dfr_edge.threads import use_torch_threads

        config = TrainConfig(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
        use_torch_threads(args.threads)
        result = run_demo(args.out, SyntheticSpec(texture=args.texture, seed=args.seed), config, force=args.force)
    print()
    print(format_table(["model", "image AUROC", "pixel AUROC", "PRO", "ms/image (CPU, batch 8)"],
                       [[r["model"], r["image_auroc"], r["pixel_auroc"], r["pro"], round(r["ms_per_image"], 1)]
                        for r in result.rows]))
    print(f"\ndata: {result.data}\nbundle and exported models: {result.bundle}\n"
          f"overlays: {result.overlays}\nmetrics: {args.out / 'metrics.json'}\n"
          f"total {result.seconds:.0f} s")
    return 0
