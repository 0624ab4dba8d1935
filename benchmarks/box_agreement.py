"""Defect boxes found at the model's resolution against boxes of the frame-size mask, on real frames.

    python benchmarks/box_agreement.py MODEL.onnx [--data ../shared/datasets/mvtec_ad/bottle] [--out F.json]

The runtime finds defect regions on the model's map and scales the boxes to frame pixels (a
fraction of the cost at camera sizes); before, it upsampled the map to the frame and found regions
there. Scores, decisions and the frame-size map are the same either way; this measures how much the
boxes move, on every test image as a 640x480 frame (the camera benchmark's size) and at its own size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dfr_edge.data.images import IMAGE_EXTENSIONS, read_image, resize_image
from dfr_edge.report import format_table, write_json
from dfr_edge.runtime import load_detector
from dfr_edge.runtime.regions import Box, defect_boxes

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "mvtec_ad" / "bottle"


def iou(a: Box, b: Box) -> float:
    w = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    h = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    inter = max(0, w) * max(0, h)
    return inter / (a.width * a.height + b.width * b.height - inter)


def compare(new: list[Box], old: list[Box]) -> dict:
    """Each frame-mask box matched to the model-resolution box it overlaps most."""
    best = [max((iou(o, n) for n in new), default=0.0) for o in old]
    return {"old": len(old), "new": len(new), "iou": best, "old_areas": [b.area for b in old],
            "new_area": sum(b.area for b in new)}


def agreement(model: Path, data: Path, sizes: dict[str, tuple[int, int] | None]) -> dict:
    detector = load_detector(model)
    files = sorted(p for p in (data / "test").rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    results = {}
    for label, size in sizes.items():
        rows = []
        for path in files:
            image = read_image(path)
            frame = resize_image(image, *size) if size else image
            detection = detector.detect(frame)
            old = defect_boxes(detection.mask, detection.anomaly_map, detector.min_region_area)
            rows.append(compare(detection.boxes, old))
        ious = np.concatenate([r["iou"] for r in rows])
        large = ious[np.concatenate([r["old_areas"] for r in rows]) >= 100]
        results[label] = {
            "frames": len(rows), "same_box_count": float(np.mean([r["old"] == r["new"] for r in rows])),
            "boxes_old": int(sum(r["old"] for r in rows)), "boxes_new": int(sum(r["new"] for r in rows)),
            "iou_median": float(np.median(ious)), "iou_p10": float(np.percentile(ious, 10)),
            "iou_median_boxes_ge_100px": float(np.median(large)) if len(large) else float("nan"),
            "area_new_over_old": float(sum(r["new_area"] for r in rows) / max(1, sum(sum(r["old_areas"]) for r in rows)))}
    return {"model": str(model), "data": str(data), "sizes": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    result = agreement(args.model, args.data, {"640x480": (480, 640), "own size": None})
    rows = [[label, r["frames"], f"{r['same_box_count']:.2f}", f"{r['boxes_old']} / {r['boxes_new']}",
             f"{r['iou_median']:.2f}", f"{r['iou_median_boxes_ge_100px']:.2f}", f"{r['iou_p10']:.2f}",
             f"{r['area_new_over_old']:.3f}"]
            for label, r in result["sizes"].items()]
    print(format_table(["frames", "count", "same number of boxes", "boxes frame mask / model map",
                        "IoU median", "IoU median (>= 100 px)", "IoU p10", "area new / old"], rows))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
