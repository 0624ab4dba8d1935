"""dfr-tune: choose a training configuration without labelled defects, and write it for dfr-train --config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dfr_edge.cli.common import ArgumentParser, add_threads_option, check_writable, positive_int, run_main
from dfr_edge.report import format_table, write_json


def image_size(text: str) -> tuple[int, int]:
    """'256' (square) or '320x128' (height x width), read as dfr-train reads --image-size; no 'auto' here."""
    from dfr_edge.config import parse_image_size  # lazily: the config pulls in OpenCV, --help stays instant

    size = parse_image_size(text)
    if not (isinstance(size, list) and len(size) == 2):
        raise argparse.ArgumentTypeError(f"image size {text!r}: expected N or HEIGHTxWIDTH, e.g. 256 or 320x128")
    return (size[0], size[1])


def layer_set(text: str) -> tuple[str, ...] | None:
    """'default' (the backbone's default) or comma-separated layer names."""
    return None if text == "default" else tuple(name.strip() for name in text.split(",") if name.strip())


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="dfr-tune", description=__doc__)
    p.add_argument("--data", type=Path, required=True,
                   help="MVTec-layout category folder (uses train/good) or a folder of good images")
    p.add_argument("--out", type=Path, required=True, help="YAML file to write the winning configuration to")
    p.add_argument("--config", type=Path, help="base YAML configuration; the grid overrides its keys")
    # Grid options left out take dfr_edge.tune.TuneGrid's defaults (filled in after parsing: --help stays instant).
    p.add_argument("--sizes", type=image_size, nargs="+",
                   help="image sizes to try: N or HEIGHTxWIDTH, multiples of 32 (default 256)")
    p.add_argument("--layers", type=layer_set, nargs="+",
                   help="layer sets to try: 'default' or comma-separated names (default: default)")
    p.add_argument("--steps", type=positive_int, nargs="+", help="CAE steps to try (default 1500 6000)")
    p.add_argument("--sigmas", type=float, nargs="+", help="map smoothing sigmas to try (default 2 4)")
    p.add_argument("--scores", nargs="+",
                   help="image score rules to try: max, topk:K, quantile:Q (default topk:1000 max quantile:0.99)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--labelled", action="store_true",
                       help="select on the dataset's labelled test split instead of synthetic anomalies")
    which.add_argument("--compare", action="store_true",
                       help="select on synthetic anomalies and also score the labelled test split, reporting how "
                            "well the two rankings agree")
    p.add_argument("--objective", choices=["mean", "pixel_auroc", "pro", "image_auroc"], default="mean",
                   help="what 'best' means: mean of image AUROC, pixel AUROC and PRO (default), or one of them")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="fraction of good training images held out for synthetic anomalies (default 0.2)")
    p.add_argument("--paste-strength", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="opacity range of the pasted anomalies, drawn uniformly (default 0.3 1; 1 1: full strength)")
    p.add_argument("--json", type=Path, help="also write every grid point's metrics and timings as JSON here")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    add_threads_option(p)
    return p


@run_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from dfr_edge.config import load_config
    from dfr_edge.data.mvtec import open_dataset
    from dfr_edge.threads import use_torch_threads
    from dfr_edge.tune import PASTE_STRENGTH, TuneGrid, result_record, result_rows, tune, write_config

    if args.out.exists() and not args.force:  # fail before minutes of tuning
        raise FileExistsError(f"{args.out} already exists; choose another --out or pass --force to replace it")
    for path in (args.out, args.json):
        if path is not None:
            check_writable(path)
    if not 0.0 < args.holdout < 1.0:
        raise ValueError(f"--holdout must be in (0, 1), got {args.holdout}")
    base = load_config(args.config, {})
    given = {"image_sizes": args.sizes, "layer_sets": args.layers, "steps": args.steps, "sigmas": args.sigmas,
             "scores": args.scores}
    grid = TuneGrid(**{name: tuple(values) for name, values in given.items() if values is not None})
    sets = ("labelled",) if args.labelled else ("synthetic", "labelled") if args.compare else ("synthetic",)
    select = "labelled" if args.labelled else "synthetic"
    use_torch_threads(args.threads)
    low, high = args.paste_strength or PASTE_STRENGTH
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"--paste-strength {low:g} {high:g}: need 0 < LOW <= HIGH <= 1")
    result = tune(open_dataset(args.data), grid, base, sets, select, args.objective, args.holdout,
                  paste_strength=(low, high))
    print(format_table(*result_rows(result)))
    winner = result.winner.config(base)
    write_config(winner, args.out, force=args.force)
    print(f"\nbest by {args.objective} on {select} anomalies (*): written to {args.out}; train it with "
          f"dfr-train --config {args.out} --data {args.data} --out BUNDLE")
    if result.agreement:
        a = result.agreement
        print(f"synthetic vs labelled ranking: Spearman {a.spearman:.3f} ({args.objective}), "
              f"{a.spearman_pixel_auroc:.3f} (pixel AUROC); regret of the synthetic pick {a.regret:.4f} "
              f"({args.objective}), {a.regret_pixel_auroc:.4f} pixel AUROC")
    print(f"{grid.points} grid points in {result.seconds['total_s']:.0f} s")
    if args.json:
        write_json(args.json, result_record(result, base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
