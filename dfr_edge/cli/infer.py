"""dfr-infer: run an exported model over images, folders, globs or video files.

Writes, under --out: overlays/<name>.png, masks/<name>.png (255 = defect pixel) and
results.jsonl (one record per image: path, score, anomalous, defect boxes). Unreadable inputs are
reported and skipped; the exit status is 1 if any were. --out must be new or empty; --force reuses
the folder of an earlier run, replacing that run's results only (other files there are kept).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dfr_edge.cli.common import ArgumentParser, add_threads_option, finite_float, positive_int, run_main

EXIT_SOME_FAILED = 1


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="dfr-infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="exported .onnx file (any variant), a bundle folder (its best one here), or a "
                                 "Triton server's model: triton://HOST:8001/NAME")
    p.add_argument("inputs", nargs="+", help="image files, folders, glob patterns or video files")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--provider", default="cpu", help="cpu, cuda or tensorrt (ONNX Runtime execution provider)")
    p.add_argument("--pixel-threshold", type=finite_float, help="override the model's pixel threshold")
    p.add_argument("--image-threshold", type=finite_float, help="override the model's image threshold")
    p.add_argument("--no-images", action="store_true", help="write only results.jsonl (no overlays or masks)")
    p.add_argument("--force", action="store_true",
                   help="reuse --out of an earlier dfr-infer run: clears its results.jsonl, overlays/ and masks/ PNGs")
    add_threads_option(p)
    return p


def batched(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@run_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from dfr_edge.outputs import claim_infer_output, writing

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with writing(args.out, "dfr-infer"):
        claim_infer_output(args.out, args.force)  # before any work: refused runs cost nothing
        return infer(args)


def infer(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dfr_edge.runtime import load_detector
    from dfr_edge.runtime.backend import pick_model
    from dfr_edge.runtime.sources import expand_inputs, frame_count, iter_items
    from dfr_edge.runtime.writer import ResultWriter
    from dfr_edge.threads import default_threads

    model = pick_model(Path(args.model), args.provider) if Path(args.model).is_dir() else args.model  # lean: no torch
    detector = load_detector(model, provider=args.provider, pixel_threshold=args.pixel_threshold,
                             image_threshold=args.image_threshold, max_batch=args.batch_size,
                             threads=args.threads or default_threads())
    expanded = expand_inputs(args.inputs)
    for spec in expanded.missing:
        print(f"warning: {spec} matched no file", file=sys.stderr)
    if not expanded.files:
        raise FileNotFoundError("no input images or videos found")
    failures = len(expanded.missing)
    total = sum(frame_count(p) for p in expanded.files)
    with ResultWriter(args.out, images=not args.no_images) as writer, \
            tqdm(total=total, unit="img", desc="infer") as progress:
        for batch in batched(iter_items(expanded.files), args.batch_size):
            good = [item.frame for item in batch if item.frame is not None]
            detections = iter(detector.detect(good) if good else [])
            for item in batch:  # records in input order, skipped ones where they were
                if item.frame is None:
                    failures += 1
                    writer.failed(item)
                    tqdm.write(f"skipped {item.source}: {item.error}", file=sys.stderr)
                    continue
                detection = next(detections)
                writer.write(item, detection, detector.overlay(item.frame, detection) if not args.no_images else None)
            progress.update(len(batch))
    print(f"{writer.count} image(s) processed, {writer.anomalous} anomalous, {failures} skipped; "
          f"results in {args.out / 'results.jsonl'}")
    return EXIT_SOME_FAILED if failures else 0
