"""dfr-train: train DFR on normal images and write a bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from dfr_edge.cli.common import ArgumentParser, add_threads_option, run_main
from dfr_edge.report import format_table


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="dfr-train", description=__doc__)
    p.add_argument("--data", type=Path, required=True,
                   help="MVTec-layout category folder (uses train/good) or a folder of good images")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--config", type=Path, help="YAML file with TrainConfig keys; CLI options override it")
    p.add_argument("--backbone", help="efficientnet_lite0 (default), vgg19, resnet18, wide_resnet50_2")
    p.add_argument("--layers", help="comma-separated layer names, or a preset (vgg19: paper12, paper16)")
    p.add_argument("--backbone-weights", help="'imagenet' (default), 'random', or a local weights file")
    p.add_argument("--vgg-mode", choices=["faithful", "clean"], help="vgg19 padding: reference quirk or clean")
    p.add_argument("--image-size", help="model size: a side (256), HxW or H,W (multiples of 32, e.g. 384x160), "
                                        "or auto (from the training images' size and aspect)")
    p.add_argument("--steps", type=int, help="CAE optimizer steps (default 6000, whatever the data size)")
    p.add_argument("--epochs", type=int, help="train for N full passes over all feature positions instead")
    p.add_argument("--sigma", type=float, help="Gaussian smoothing of the anomaly map in pixels (0 = off)")
    p.add_argument("--score", help="image score from the map: topk:K (mean of the K largest; default topk:1000), "
                   "max, quantile:Q")
    p.add_argument("--seed", type=int)
    p.add_argument("--skip-bad-images", action="store_true", default=None,
                   help="skip unreadable images (listed in the report) instead of stopping")
    p.add_argument("--force", action="store_true", help="replace an existing bundle (never anything else)")
    add_threads_option(p)
    return p


def overrides(args: argparse.Namespace) -> dict:
    layers = args.layers
    if layers and "," in layers:
        layers = [name.strip() for name in layers.split(",") if name.strip()]
    return {
        "backbone": args.backbone,
        "layers": layers,
        "backbone_weights": args.backbone_weights,
        "vgg_mode": args.vgg_mode,
        "image_size": args.image_size,
        "steps": args.steps,
        "epochs": args.epochs,
        "sigma": args.sigma,
        "score": args.score,
        "seed": args.seed,
        "skip_bad_images": args.skip_bad_images,
    }


@run_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Imports after parsing so that --help is instant and argument errors come before torch loads.
    from dfr_edge.config import load_config
    from dfr_edge.outputs import check_bundle_target, writing

    config = load_config(args.config, overrides(args))
    check_bundle_target(args.out, args.force, args.data)  # before torch loads and minutes of training
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with writing(args.out, "dfr-train"):
        from dfr_edge.bundle import save_bundle
        from dfr_edge.data.mvtec import open_dataset
        from dfr_edge.threads import use_torch_threads
        from dfr_edge.trainer import train

        use_torch_threads(args.threads)
        result = train(config, open_dataset(args.data))
        save_bundle(result, args.out, args.data, force=args.force)
    t, last = result.thresholds, result.history[-1]
    print(format_table(
        ["bundle", "backbone", "C", "d", "images", "steps", "val loss", "pixel thr", "image thr", "seconds"],
        [[str(args.out), result.backbone.name, result.channels, result.latent_dim, len(result.train_paths),
          last.steps, last.val_loss if last.val_loss is not None else "-", t.pixel, t.image,
          round(result.timings["total_s"], 1)]],
    ))
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable image(s); see the log above and dfr.json")
    return 0
