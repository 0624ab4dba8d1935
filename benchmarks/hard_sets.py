"""Accuracy on every set we have, per defect type; image-score rules; dfr-tune's agreement (issue 10).

    python benchmarks/hard_sets.py --set strip_cracks [--tune]          # one embedded hard set
    python benchmarks/hard_sets.py --set bottle [--data DIR] [--tune]   # MVTec AD bottle
    python benchmarks/hard_sets.py --set brick [--tune]                 # an embedded demo texture

The hard sets and demo textures are generated (seeded, byte-reproducible) under --root. The default
configuration is trained at the set's image size (the parts' own aspect: strips 320x128, rubber 192x256,
H x W), evaluated per defect type, and the same trained model is scored with every image-score rule (only
the image score changes). --tune also runs dfr-tune's grid, scored on synthetic anomalies and on the
labelled test split, and reports how well the synthetic ranking agrees with the real one. Prints tables,
writes benchmarks/results/hard_sets_<set>.json.

    python benchmarks/hard_sets.py --summary    # markdown tables over every results/hard_sets_*.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

from dfr_edge import __version__
from dfr_edge.config import TrainConfig
from dfr_edge.data.mvtec import load_test_arrays, open_dataset
from dfr_edge.data.synthetic import TEXTURES, HardSetSpec, SyntheticSpec, generate_dataset, generate_hard_set
from dfr_edge.evaluate import evaluate
from dfr_edge.model import AnomalyHead
from dfr_edge.predict import predict_torch
from dfr_edge.report import format_table, machine_info, write_json
from dfr_edge.trainer import train
from dfr_edge.tune import TuneGrid, result_record, result_rows, tune

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "mvtec_ad" / "bottle"
SET_SIZES = {"strip_cracks": (320, 128), "grey_pits": (256, 256), "dark_rubber": (192, 256), "faint_rubber": (192, 256),
             "bottle": (256, 256),
             **{texture: (256, 256) for texture in TEXTURES}}
SCORE_RULES = ("max", "topk:10", "topk:100", "topk:1000", "quantile:0.99", "quantile:0.999")
BOTTLE_LAYER_SETS = (None, ("stage2", "stage3", "stage4", "stage5"))
TUNE_SCORES = ("max", "topk:100", "quantile:0.99")  # the grid the recorded results were measured with


def dataset_folder(name: str, args: argparse.Namespace) -> Path:
    if name == "bottle":
        return args.data
    if name in TEXTURES:
        return generate_dataset(args.root, SyntheticSpec(texture=name))  # the demo dataset's spec
    return generate_hard_set(args.root, HardSetSpec(name=name))


def accuracy(folder: Path, size: tuple[int, int]) -> dict:
    """Default configuration at `size`: metrics overall and per type, for every score rule."""
    config = TrainConfig(image_size=list(size), score="max")  # the rules are swapped in below
    dataset = open_dataset(folder)
    start = time.perf_counter()
    result = train(config, dataset)
    train_s = time.perf_counter() - start
    test = load_test_arrays(dataset, config.geometry(*size))
    rules = {}
    for rule in SCORE_RULES:
        result.model.head = AnomalyHead(size, result.channels, config.sigma, rule)
        evaluation = evaluate(lambda images: predict_torch(result.model, images), test)
        rules[rule] = {"all": evaluation.metrics.to_dict(),
                       **{kind: m.to_dict() for kind, m in evaluation.by_type(test).items()}}
    return {"image_size": list(size), "train_images": len(result.train_paths), "test_images": len(test.images),
            "train_s": round(train_s, 1), "latent_dim": result.latent_dim, "rules": rules}


def tune_grid(name: str, size: tuple[int, int]) -> TuneGrid:
    """dfr-tune's default grid (score rules as recorded), plus the square default size for non-square sets and a
    second layer set on bottle."""
    sizes = (size,) if size == (256, 256) else (size, (256, 256))
    layers = BOTTLE_LAYER_SETS if name == "bottle" else (None,)
    return TuneGrid(image_sizes=sizes, layer_sets=layers, scores=TUNE_SCORES)


def print_accuracy(name: str, record: dict) -> None:
    headers = ["score rule", "type", "image AUROC", "pixel AUROC", "PRO"]
    rows = []
    for rule, by_type in record["rules"].items():
        for kind, m in by_type.items():
            if rule == "max" or kind == "all":
                rows.append([rule, kind, m["image_auroc"], m["pixel_auroc"], m["pro"]])
    print(f"{name} at {record['image_size'][0]}x{record['image_size'][1]} (H x W), default configuration, "
          f"trained in {record['train_s']} s:")
    print(format_table(headers, rows))


def pick(points: list[dict], key) -> dict:
    return max(points, key=key)


def describe(point: dict) -> str:
    layers = "default" if point["layers"] is None else ",".join(point["layers"])
    return (f"{point['image_size'][0]}x{point['image_size'][1]} {layers} {point['steps']} steps "
            f"sigma {point['sigma']:g} {point['score']}")


def summary(results: dict[str, dict]) -> str:
    """Markdown tables over all sets: per type, score rules side by side, dfr-tune's agreement."""
    lines = ["| set | size (H x W) | type | image AUROC | pixel AUROC | PRO |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "default" not in r:
            continue
        d = r["default"]
        for kind, m in d["rules"]["max"].items():
            lines.append(f"| {name} | {d['image_size'][0]}x{d['image_size'][1]} | {kind} | {m['image_auroc']:.4f} "
                         f"| {m['pixel_auroc']:.4f} | {m['pro']:.4f} |")
    with_default = {n: r["default"]["rules"] for n, r in results.items() if "default" in r}
    lines += ["", "| image score | " + " | ".join(with_default) + " | mean |",
              "|---|" + "---|" * (len(with_default) + 1)]
    for rule in SCORE_RULES:
        values = [rules[rule]["all"]["image_auroc"] for rules in with_default.values()]
        lines.append(f"| {rule} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {sum(values) / len(values):.4f} |")
    lines += ["", "| set | points | Spearman (mean) | Spearman (pixel) | regret (mean) | regret (pixel) "
              "| synthetic pick | its labelled image / pixel / PRO | best labelled pixel AUROC | tune s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "tune" not in r:
            continue
        t, a = r["tune"], r["tune"]["agreement"]
        chosen = pick(t["points"], lambda p: (p["synthetic"]["image_auroc"] + p["synthetic"]["pixel_auroc"]
                                              + p["synthetic"]["pro"]) / 3)
        best = pick(t["points"], lambda p: p["labelled"]["pixel_auroc"])
        m = chosen["labelled"]
        lines.append(f"| {name} | {len(t['points'])} | {a['spearman']:.3f} | {a['spearman_pixel_auroc']:.3f} "
                     f"| {a['regret']:.4f} | {a['regret_pixel_auroc']:.4f} | {describe(chosen)} "
                     f"| {m['image_auroc']:.4f} / {m['pixel_auroc']:.4f} / {m['pro']:.4f} "
                     f"| {best['labelled']['pixel_auroc']:.4f} ({describe(best)}) | {t['seconds']['total_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", choices=list(SET_SIZES))
    p.add_argument("--summary", action="store_true", help="print markdown tables over all results and stop")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MVTec AD bottle folder (for --set bottle)")
    p.add_argument("--root", type=Path, default=Path("runs/benchmarks/hard"), help="where hard sets are generated")
    p.add_argument("--tune", action="store_true", help="also run dfr-tune's grid and its agreement measurement")
    p.add_argument("--no-accuracy", action="store_true", help="skip the default-configuration run")
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/hard_sets_<set>.json)")
    args = p.parse_args()
    if args.summary:
        found = sorted((HERE / "results").glob("hard_sets_*.json"))
        print(summary({f.stem.removeprefix("hard_sets_"): json.loads(f.read_text()) for f in found}))
        return
    if args.set is None:
        p.error("give --set NAME or --summary")
    logging.basicConfig(level=logging.WARNING)
    folder = dataset_folder(args.set, args)
    size = SET_SIZES[args.set]
    record = {"dfr_edge": __version__, "machine": machine_info(), "set": args.set, "data": str(folder)}
    if not args.no_accuracy:
        record["default"] = accuracy(folder, size)
        print_accuracy(args.set, record["default"])
    if args.tune:
        result = tune(open_dataset(folder), tune_grid(args.set, size), TrainConfig(), ("synthetic", "labelled"),
                      paste_strength=(1.0, 1.0))  # as recorded; dfr-tune's default since is (0.3, 1.0)
        print(f"\ndfr-tune grid on {args.set} (selected on synthetic anomalies, *):")
        print(format_table(*result_rows(result)))
        print(f"agreement: {dataclasses.asdict(result.agreement)}; seconds: {result.seconds}")
        record["tune"] = result_record(result, TrainConfig())
    out = args.out or HERE / "results" / f"hard_sets_{args.set}.json"
    write_json(out, record)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
