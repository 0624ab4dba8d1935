"""Input geometry (contract 4): how a camera frame becomes model inputs, and how maps come back.

One torch-free module that the trainer, the evaluator and the runtime all use, so a frame is seen
the same way everywhere and its anomaly map always comes back in the frame's own pixels:

    frame ──roi──▶ region ──tiles──▶ tile ──resize mode──▶ H x W model input
    frame map ◀──paste── region map ◀──stitch (ramp blend)── tile map ◀──unresize── model map

Resize modes: `stretch` scales each side independently (the original behaviour); `letterbox` keeps
the aspect and pads the model canvas (padding replicates the border, so no artificial edge sits
next to the part; it is cut out of maps and scores); `crop` keeps the aspect by cutting the centre
to the model's aspect (pixels outside it are not inspected). Pixels the model never saw (outside
the ROI or a crop) come back at the caller's `fill` level and `valid` False.

Image score: where a model input has no padding, its score is the graph's own (the fused graph's
rule over the whole map). Where it has padding, the score is recomputed here over the valid part of
the map: the host knows the padding rectangle exactly and a max over 256x256 floats costs
microseconds, whereas teaching the graph to ignore padding would need a second input in every
engine, export and Triton config (contract 1). With tiles, the frame's score is the max over tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from dfr_edge.data.images import resize_image, resize_mask
from dfr_edge.manifest import ManifestError

RESIZE_MODES = ("stretch", "letterbox", "crop")
SIDE_MULTIPLE = 32  # every backbone here downsamples by at most 32
BASE_PIXELS = 256 * 256  # the compute of the default model size: the unit of the auto-size budget
AUTO_ASPECT_TOLERANCE = math.log(1.05)  # auto size: aspect within 5% of the images'
ASPECT_WARN_RATIO = 1.1  # training images whose aspects differ by more than 10% get a warning

GEOMETRY_FORMAT = ("{'resize': 'stretch|letterbox|crop', 'roi': null|[x, y, w, h], "
                   "'tiling': null|{'tile': [h, w], 'overlap': px}}")
ScoreOf = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in pixels: top-left (y, x) and size (h, w)."""

    y: int
    x: int
    h: int
    w: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)


@dataclass(frozen=True)
class Tiling:
    tile: tuple[int, int]  # tile height, width in region pixels (usually the model size: 1:1)
    overlap: int  # minimum overlap of neighbouring tiles in pixels, blended by linear ramps

    def __post_init__(self) -> None:
        if len(self.tile) != 2 or min(self.tile) < 1:
            raise ValueError(f"tiling: tile must be [height, width] in pixels, got {list(self.tile)}")
        if not 0 <= self.overlap < min(self.tile):
            raise ValueError(f"tiling: overlap {self.overlap} must be >= 0 and smaller than the tile {list(self.tile)}")


@dataclass(frozen=True)
class Placement:
    """One model input: `source` pixels of the region, resized into `target` pixels of the canvas."""

    source: Box  # in region pixels
    target: Box  # in the model's H x W canvas
    weight_box: Box  # the whole tile `source` was cut from, in region pixels (for blending)


@dataclass
class RegionMap:
    """A stitched map over a region (or frame): values, which pixels the model saw, and the score."""

    values: np.ndarray  # float32 h x w
    valid: np.ndarray | None  # bool h x w; None means every pixel is valid
    score: float

    def valid_values(self) -> np.ndarray:
        """The map's values where the model saw the image, flattened."""
        return self.values.ravel() if self.valid is None else self.values[self.valid]


@dataclass(frozen=True)
class Geometry:
    """Model size, resize mode, region of interest (x, y, w, h in frame pixels) and tiling."""

    height: int
    width: int
    resize: str = "stretch"
    roi: tuple[int, int, int, int] | None = None
    tiling: Tiling | None = None

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize mode {self.resize!r}: choose one of {', '.join(RESIZE_MODES)}")
        if self.roi is not None and (len(self.roi) != 4 or min(self.roi[2:]) < 1 or min(self.roi[:2]) < 0):
            raise ValueError(f"roi must be [x, y, width, height] with x, y >= 0 and a positive size, got {self.roi}")

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    @classmethod
    def from_manifest(cls, meta: dict) -> Geometry:
        """Geometry of a dfr.json; manifests from before geometry existed read as stretch, no ROI, no tiles."""
        return cls.from_section(meta.get("geometry"), int(meta["input"]["height"]), int(meta["input"]["width"]))

    @classmethod
    def from_section(cls, section: dict | None, height: int, width: int) -> Geometry:
        """Geometry from dfr.json's `geometry` section (None: stretch) at a model size."""
        try:
            section = section or {}
            tiling, roi = section.get("tiling"), section.get("roi")
            return cls(height, width, section.get("resize", "stretch"), tuple(int(v) for v in roi) if roi else None,
                       Tiling(tuple(int(v) for v in tiling["tile"]), int(tiling["overlap"])) if tiling else None)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ManifestError("dfr.json", f"geometry section is invalid ({exc}); expected {GEOMETRY_FORMAT}",
                                "restore the dfr.json that dfr-train wrote, or retrain") from None

    def to_dict(self) -> dict:
        """The dfr.json `geometry` section (input.height/width hold the model size)."""
        tiling = self.tiling and {"tile": list(self.tiling.tile), "overlap": self.tiling.overlap}
        return {"resize": self.resize, "roi": list(self.roi) if self.roi else None, "tiling": tiling}

    def region(self, frame: np.ndarray) -> np.ndarray:
        """The ROI of a frame (a view), or the whole frame."""
        if self.roi is None:
            return frame
        x, y, w, h = self.roi
        if x + w > frame.shape[1] or y + h > frame.shape[0]:
            raise ValueError(f"region of interest x={x} y={y} w={w} h={h} does not fit in a "
                             f"{frame.shape[1]}x{frame.shape[0]} frame; fix roi in the configuration")
        return frame[y : y + h, x : x + w]

    def sampling_size(self, region_hw: tuple[int, int]) -> tuple[int, int]:
        """The region's size at the model's sampling rate (where evaluation and thresholds work).

        stretch: H x W. letterbox: the region scaled to fit H x W (the canvas minus padding). crop:
        the region scaled to cover H x W. Tiled: the region's own pixels (tiles are usually 1:1).
        """
        h, w = region_hw
        if self.tiling is not None:
            return h, w
        if self.resize == "stretch":
            return self.size
        if self.resize == "letterbox":
            s = min(self.height / h, self.width / w)
            return min(self.height, round(h * s)), min(self.width, round(w * s))
        s = max(self.height / h, self.width / w)
        return max(self.height, round(h * s)), max(self.width, round(w * s))

    def sample(self, frame: np.ndarray) -> np.ndarray:
        """The frame's ROI resampled to `sampling_size`: evaluation and training work on these."""
        region = self.region(frame)
        return resize_image(region, *self.sampling_size(region.shape[:2]))

    def sample_mask(self, mask: np.ndarray) -> np.ndarray:
        """A ground-truth mask mapped exactly like its image by `sample`."""
        region = self.region(mask)
        size = self.sampling_size(region.shape[:2])
        return region if region.shape == size else resize_mask(region, *size)

    def sampled(self) -> Geometry:
        """The geometry that applies to `sample`d frames: no ROI (already cut)."""
        return replace(self, roi=None)

    def plan(self, region_hw: tuple[int, int]) -> Plan:
        """The model inputs of a region this size: its tiles (or itself), each placed by the resize mode."""
        h, w = region_hw
        tile_h, tile_w = self.tiling.tile if self.tiling else (h, w)
        overlap = self.tiling.overlap if self.tiling else 0
        placements = [self._place(Box(y, x, th, tw))
                      for y, th in tile_starts(h, tile_h, overlap) for x, tw in tile_starts(w, tile_w, overlap)]
        return Plan((h, w), self.size, placements)

    def _place(self, tile: Box) -> Placement:
        canvas = Box(0, 0, self.height, self.width)
        if self.resize == "letterbox":
            s = min(self.height / tile.h, self.width / tile.w)
            dh, dw = min(self.height, round(tile.h * s)), min(self.width, round(tile.w * s))
            return Placement(tile, Box((self.height - dh) // 2, (self.width - dw) // 2, dh, dw), tile)
        if self.resize == "crop":
            s = max(self.height / tile.h, self.width / tile.w)
            sh, sw = min(tile.h, round(self.height / s)), min(tile.w, round(self.width / s))
            return Placement(Box(tile.y + (tile.h - sh) // 2, tile.x + (tile.w - sw) // 2, sh, sw), canvas, tile)
        return Placement(tile, canvas, tile)

    def to_inputs(self, frames: Sequence[np.ndarray]) -> FrameBatch:
        """Frames (any sizes) → all their model inputs in one array, and how to map outputs back."""
        plans = [self.plan(self.region(f).shape[:2]) for f in frames]
        inputs = np.stack([x for f, plan in zip(frames, plans) for x in plan.inputs(self.region(f))])
        return FrameBatch(self, inputs, plans, [f.shape[:2] for f in frames])

    def paste(self, region: RegionMap, frame_hw: tuple[int, int], fill: float) -> RegionMap:
        """A region map placed back into the full frame; outside the ROI the map is `fill`, not valid."""
        if self.roi is None:
            return region
        x, y, w, h = self.roi
        values = np.full(frame_hw, fill, np.float32)
        valid = np.zeros(frame_hw, bool)
        values[y : y + h, x : x + w] = region.values
        valid[y : y + h, x : x + w] = True if region.valid is None else region.valid
        return RegionMap(values, valid, region.score)


def tile_starts(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, size) of tiles covering [0, length): evenly spaced, first at 0, last at the end.

    ceil((length - overlap) / (tile - overlap)) tiles keep every neighbour overlap >= `overlap`.
    A length no longer than the tile is one tile of that length.
    """
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [(round(i * (length - tile) / (count - 1)), tile) for i in range(count)]


@dataclass(frozen=True)
class Plan:
    """The model inputs of one region and how their maps stitch back into it."""

    region: tuple[int, int]  # h, w
    model: tuple[int, int]  # H, W
    placements: list[Placement]

    def __len__(self) -> int:
        return len(self.placements)

    def inputs(self, region: np.ndarray) -> Iterator[np.ndarray]:
        """The len(self) model inputs (uint8 H x W x 3) cut from the region, in order."""
        return (self._input(region, p) for p in self.placements)

    def _input(self, region: np.ndarray, p: Placement) -> np.ndarray:
        patch = resize_image(region[p.source.slices], p.target.h, p.target.w)
        (H, W), t = self.model, p.target
        if (t.h, t.w) == (H, W):
            return patch
        return cv2.copyMakeBorder(patch, t.y, H - t.y - t.h, t.x, W - t.x - t.w, cv2.BORDER_REPLICATE)

    def score(self, maps: np.ndarray, scores: np.ndarray, score_of: ScoreOf = np.max) -> float:
        """The region's score: the max over inputs of each input's score (the graph's, or `score_of` the
        valid part where the input was padded)."""
        return max(self._score(m, float(s), p, score_of) for m, s, p in zip(maps, scores, self.placements))

    def sampled(self, maps: np.ndarray, top_left: tuple[int, int] = (0, 0)) -> SampledMap | None:
        """A one-input region's map at the model's resolution (padding cut off) and where it lies in the
        frame (`top_left`: the region's corner in the frame); None when tiled, since tiles are stitched in
        region pixels anyway."""
        if len(self.placements) != 1:
            return None
        p = self.placements[0]
        return SampledMap(maps[0][p.target.slices], top_left[0] + p.source.y, top_left[1] + p.source.x,
                          p.source.h / p.target.h, p.source.w / p.target.w)

    def stitch(self, maps: np.ndarray, scores: np.ndarray, fill: float = 0.0,
               score_of: ScoreOf = np.max) -> RegionMap:
        """Model maps (len(self) x H x W) and scores → one map over the region, in region pixels.

        Overlapping tiles are blended with linear ramps over their overlap, so seams do not show and a
        constant map stays constant; the score is `score` above.
        """
        score = self.score(maps, scores, score_of)
        if len(self.placements) == 1:
            p = self.placements[0]
            values = self._unresize(maps[0], p)
            if (p.source.h, p.source.w) == self.region:
                return RegionMap(values, None, score)
            region = RegionMap(np.full(self.region, fill, np.float32), np.zeros(self.region, bool), score)
            region.values[p.source.slices] = values
            region.valid[p.source.slices] = True
            return region
        total = np.zeros(self.region, np.float32)
        weight = np.zeros(self.region, np.float32)
        for amap, p in zip(maps, self.placements):
            w = self._ramp(p)
            total[p.source.slices] += w * self._unresize(amap, p)
            weight[p.source.slices] += w
        valid = weight > 0
        values = np.full(self.region, fill, np.float32)
        np.divide(total, weight, out=values, where=valid)
        return RegionMap(values, None if valid.all() else valid, score)

    def _score(self, amap: np.ndarray, score: float, p: Placement, score_of: ScoreOf) -> float:
        if (p.target.h, p.target.w) == self.model:
            return score
        return float(score_of(amap[p.target.slices]))

    @staticmethod
    def _unresize(amap: np.ndarray, p: Placement) -> np.ndarray:
        part = amap[p.target.slices]
        if part.shape == (p.source.h, p.source.w):
            return part
        return cv2.resize(part, (p.source.w, p.source.h), interpolation=cv2.INTER_LINEAR)

    def _ramp(self, p: Placement) -> np.ndarray:
        """Weights over p.source: rising linearly across the overlap with each neighbouring tile."""
        tiles = [q.weight_box for q in self.placements]
        t = p.weight_box
        ys = _axis_ramp(t.y, t.h, sorted({(q.y, q.h) for q in tiles}))
        xs = _axis_ramp(t.x, t.w, sorted({(q.x, q.w) for q in tiles}))
        ramp = np.outer(ys, xs).astype(np.float32)
        return ramp[p.source.y - t.y : p.source.y - t.y + p.source.h, p.source.x - t.x : p.source.x - t.x + p.source.w]


def _axis_ramp(start: int, size: int, spans: list[tuple[int, int]]) -> np.ndarray:
    """1 inside the tile, falling linearly to 1/(overlap+1) at a side shared with a neighbour."""
    i = spans.index((start, size))
    before = spans[i - 1][0] + spans[i - 1][1] - start if i > 0 else 0
    after = start + size - spans[i + 1][0] if i + 1 < len(spans) else 0
    j = np.arange(size, dtype=np.float64)
    return np.minimum(1.0, np.minimum((j + 1) / (max(before, 0) + 1), (size - j) / (max(after, 0) + 1)))


def auto_image_size(region_sizes: Sequence[tuple[int, int]], max_pixels: int = BASE_PIXELS) -> tuple[int, int]:
    """The model size for images of these (h, w) sizes: aspect kept, within a compute budget.

    Rule: take the median height and width; for every height that is a multiple of 32, the width
    nearest the median aspect (a multiple of 32). Keep sizes within `max_pixels` and no larger than
    the median size rounded up to multiples of 32 (no pointless upscaling). The largest size whose
    aspect is within 5% of the median aspect wins (if none is, the largest of the closest aspect). E.g. 1250x500
    (h x w) within 256*256 pixels gives 384x160; 2048x2448 gives 224x256; 900x900 gives 256x256.
    """
    if not region_sizes:
        raise ValueError("image size auto needs at least one training image")
    h, w = (float(np.median([s[i] for s in region_sizes])) for i in (0, 1))
    cap = min(max_pixels, _round_up(h) * _round_up(w))
    candidates = []
    for height in range(SIDE_MULTIPLE, _round_up(h) + 1, SIDE_MULTIPLE):
        width = max(SIDE_MULTIPLE, round(height * w / h / SIDE_MULTIPLE) * SIDE_MULTIPLE)
        if height * width <= cap:
            candidates.append((abs(math.log(width / height * h / w)), height, width))
    if not candidates:
        raise ValueError(f"image size auto: no size with sides multiples of {SIDE_MULTIPLE} fits "
                         f"{max_pixels} pixels at aspect {w / h:.2f}; raise auto_max_pixels")
    tolerance = max(AUTO_ASPECT_TOLERANCE, min(c[0] for c in candidates) + 1e-9)
    close = [c for c in candidates if c[0] <= tolerance]
    _, height, width = max(close, key=lambda c: c[1] * c[2])
    return height, width


def _round_up(value: float) -> int:
    return max(SIDE_MULTIPLE, math.ceil(value / SIDE_MULTIPLE) * SIDE_MULTIPLE)


def aspect_spread(region_sizes: Iterable[tuple[int, int]]) -> tuple[float, float]:
    """Smallest and largest width/height aspect among the sizes."""
    aspects = [w / h for h, w in region_sizes]
    return min(aspects), max(aspects)


def model_inputs(frames: Iterable[np.ndarray], geometry: Geometry) -> np.ndarray:
    """All model inputs (tiles included) of some frames, in order: what training feeds the backbone."""
    return geometry.to_inputs(list(frames)).inputs


@dataclass(frozen=True)
class SampledMap:
    """A frame's map at the model's resolution and its place in the frame: map pixel (i, j) covers frame
    rows top + i*scale_y to top + (i+1)*scale_y and the columns likewise. Regions found here cost a
    fraction of finding them in a large frame's upsampled map (the camera loop's decisions)."""

    values: np.ndarray  # float32 h x w, every pixel seen by the model
    top: int
    left: int
    scale_y: float  # frame pixels per map pixel
    scale_x: float


@dataclass
class FrameMap:
    """One frame's model outputs before they are brought to the frame's pixels."""

    geometry: Geometry
    plan: Plan
    frame_size: tuple[int, int]
    maps: np.ndarray  # this frame's inputs' maps (len(plan) x H x W)
    scores: np.ndarray
    fill: float
    score_of: ScoreOf

    @property
    def score(self) -> float:
        return self.plan.score(self.maps, self.scores, self.score_of)

    def sampled(self) -> SampledMap | None:
        """The map at the model's resolution, placed in the frame; None for tiled frames."""
        roi = self.geometry.roi
        return self.plan.sampled(self.maps, (roi[1], roi[0]) if roi else (0, 0))

    def full(self) -> RegionMap:
        """The map in the frame's own pixels (stitched, unresized, pasted)."""
        region = self.plan.stitch(self.maps, self.scores, self.fill, self.score_of)
        return self.geometry.paste(region, self.frame_size, self.fill)


@dataclass
class FrameBatch:
    """The model inputs of some frames (tiles of one frame are consecutive) and how to map them back."""

    geometry: Geometry
    inputs: np.ndarray  # uint8 N x H x W x 3, N = total tiles
    plans: list[Plan]
    frame_sizes: list[tuple[int, int]]

    def to_frames(self, maps: np.ndarray, scores: np.ndarray, fill: float = 0.0,
                  score_of: ScoreOf = np.max) -> list[RegionMap]:
        """The model's outputs for `inputs` → one map per frame, in the frame's own pixels.

        `score_of` scores the unpadded part of a padded (letterboxed) input; it must match the graph's
        image-score rule (the max unless dfr.json's head says otherwise).
        """
        return [frame.full() for frame in self.frame_maps(maps, scores, fill, score_of)]

    def frame_maps(self, maps: np.ndarray, scores: np.ndarray, fill: float = 0.0,
                   score_of: ScoreOf = np.max) -> list[FrameMap]:
        """The model's outputs for `inputs`, split per frame (see `to_frames` for the arguments)."""
        results, start = [], 0
        for plan, size in zip(self.plans, self.frame_sizes):
            part = slice(start, start + len(plan))
            results.append(FrameMap(self.geometry, plan, size, maps[part], scores[part], fill, score_of))
            start += len(plan)
        return results


def predict_frames(predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], frames: Sequence[np.ndarray],
                   geometry: Geometry, batch_size: int = 8, fill: float = 0.0,
                   score_of: ScoreOf = np.max) -> list[RegionMap]:
    """Run `predict` over whole frames through `geometry`, in batches of at most `batch_size` model
    inputs (tiles of all frames share batches); one RegionMap per frame."""
    batch = geometry.to_inputs(frames)
    outputs = [predict(batch.inputs[i : i + batch_size]) for i in range(0, len(batch.inputs), batch_size)]
    maps = np.concatenate([amap for amap, _ in outputs])
    scores = np.concatenate([score for _, score in outputs])
    return batch.to_frames(maps, scores, fill, score_of)
