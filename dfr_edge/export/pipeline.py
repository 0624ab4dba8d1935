"""dfr-export's work: every requested variant of a bundle, checked, recorded and written safely.

Order: FP32 (parity against torch asserted) → INT8 flavours (calibrated on normal training images,
float units chosen and checked against FP32 on held-out normal images: the fidelity gate, which runs
before any file is written) → writing FP32, FP16, INT8. Each file embeds dfr.json plus an export record
(variant, parity, calibration, float units and fidelity, accuracy) and passes the ONNX checker and the
TensorRT lint before it is renamed into place. An INT8 file's dfr.json thresholds by that graph's own normal
outputs (fidelity.NormalThresholds.matched); the bundle's keeps FP32's.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from dfr_edge import __version__
from dfr_edge.atomic import atomic_path
from dfr_edge.bundle import Bundle
from dfr_edge.data.images import load_images, read_images
from dfr_edge.data.mvtec import TestArrays, load_test_arrays, open_dataset, require_test_set
from dfr_edge.digest import files_digest
from dfr_edge.evaluate import evaluate
from dfr_edge.export import fidelity
from dfr_edge.export.artifacts import save_model, set_metadata
from dfr_edge.export.fp16 import to_fp16_onnx
from dfr_edge.export.int8 import FLAVOURS, CalibrationSet, Int8Flavour, calibration_set, int8_source
from dfr_edge.export.onnx_fp32 import INPUT, OPSET, OUTPUTS, Parity, compare, to_onnx
from dfr_edge.export.sensitivity import MixedInt8, mixed_int8
from dfr_edge.geometry import Geometry, model_inputs
from dfr_edge.predict import predict_torch
from dfr_edge.runtime import load_detector
from dfr_edge.score_rule import ScoreRule
from dfr_edge.trainer import split_train_val

log = logging.getLogger(__name__)
FP32_FILE, FP16_FILE = "model.onnx", "model.fp16.onnx"
PARITY_IMAGES = 8
HELD_OUT_IMAGES = 16  # fidelity images drawn when the bundle's validation split cannot be found


class ParityError(RuntimeError):
    """The exported graph does not reproduce the torch module within tolerance."""


class AccuracyDropError(RuntimeError):
    """A reduced-precision variant lost more accuracy against FP32 than --max-drop allows."""


class FidelityError(RuntimeError):
    """An INT8 variant moves the maps of normal images more than the fidelity budget allows."""


@dataclass
class ExportOptions:
    fp16: bool = False
    int8: bool = False
    calib: Path | None = None  # folder of normal images; default: the bundle's training data
    calib_method: str = "minmax"
    float_blocks: str | tuple[str, ...] = "auto"  # INT8 units kept float: 'auto' (search), 'none' or names
    fidelity_budget: float = fidelity.DEFAULT_MAP_SHIFT  # largest map shift on held-out normal images
    score_budget: float = fidelity.DEFAULT_SCORE_SHIFT  # largest score shift on them
    allow_drop: bool = False  # write INT8 beyond the fidelity budget
    calib_count: int = 256
    calib_seed: int = 0
    eval_data: Path | None = None  # MVTec-layout folder: accuracy report against FP32
    max_drop: float | None = None  # largest allowed drop of image/pixel AUROC or PRO
    tolerance: float = 1e-4  # FP32 parity: max |map error| relative to the map range
    force: bool = False  # replace existing files; without it only the missing ones are written
    threads: int | None = None  # ONNX Runtime intra-op threads of the checking sessions (None: its default)


@dataclass
class Exported:
    variant: str
    path: Path
    parity: Parity
    metrics: dict | None = None
    deltas: dict | None = None  # metric minus FP32's (negative: worse)
    info: dict = field(default_factory=dict)


def run_session(model: onnx.ModelProto, images: np.ndarray,
                threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    amap, score = session.run(list(OUTPUTS), {INPUT: images})
    return amap, score


def training_images(bundle: Bundle) -> list[Path]:
    """The bundle's normal training images, if the folder it was trained on is still there."""
    data = Path(bundle.manifest["training"]["data"])
    try:
        return open_dataset(data).train
    except (FileNotFoundError, ValueError):
        return []


def parity_images(bundle: Bundle) -> tuple[np.ndarray, str]:
    height, width = bundle.manifest["input"]["height"], bundle.manifest["input"]["width"]
    paths = training_images(bundle)[:PARITY_IMAGES]
    if paths:
        return load_images(paths, height, width, skip_bad=True).images, "training images"
    log.warning("training data of the bundle not found: checking parity on seeded noise images")
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (PARITY_IMAGES, height, width, 3), dtype=np.uint8), "seeded noise"


def export_record(variant: str, parity: Parity, parity_source: str, **extra) -> dict:
    return {
        "variant": variant,
        "opset": OPSET,
        "exporter": "torch.onnx (TorchScript) + onnxslim",
        "dfr_edge": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "parity_vs_torch_fp32": {**parity.to_dict(), "source": parity_source},
        **extra,
    }


def planned_files(bundle: Bundle, options: ExportOptions) -> dict[str, Path]:
    files = {"fp32": bundle.path / FP32_FILE}
    if options.fp16:
        files["fp16"] = bundle.path / FP16_FILE
    if options.int8:
        for flavour in FLAVOURS.values():
            files[f"int8-{flavour.name}"] = bundle.path / flavour.filename
    return files


def files_to_write(planned: dict[str, Path], force: bool) -> dict[str, Path]:
    """All planned files with force; else the missing ones (refused if none is missing)."""
    if force:
        return planned
    kept = [path.name for path in planned.values() if path.exists()]
    if len(kept) == len(planned):
        folder = next(iter(planned.values())).parent
        raise FileExistsError(f"nothing to export: every requested file already exists in {folder} "
                              f"({', '.join(kept)}); pass --force to replace them")
    if kept:
        log.info("keeping the existing %s (pass --force to replace)", ", ".join(kept))
    return {variant: path for variant, path in planned.items() if not path.exists()}


def export_bundle(bundle: Bundle, options: ExportOptions) -> list[Exported]:
    """Export the requested variants; existing files are kept unless options.force.

    FP32 is always built and checked in memory (the other variants derive from it) but written only
    if its file is missing or force is set; with --eval, an existing model.onnx is the baseline.
    """
    files = files_to_write(planned_files(bundle, options), options.force)  # before any work
    test = _eval_set(bundle, options)
    images, source = parity_images(bundle)
    reference = predict_torch(bundle.model, images)
    meta = bundle.manifest
    int8_flavours = [f for f in FLAVOURS.values() if f"int8-{f.name}" in files]
    int8_inputs = int8_images(bundle, options) if int8_flavours else None  # loaded before any file is written

    fp32 = to_onnx(bundle.model, bundle.model.extractor.image_size)
    parity = compare(reference, run_session(fp32, images, options.threads))
    log.info("FP32 parity: map max abs error %.3g (%.2g of the map range), score %.3g",
             parity.map_max_abs, parity.relative, parity.score_max_abs)
    if parity.relative > options.tolerance:
        raise ParityError(f"ONNX FP32 differs from torch by {parity.relative:.3g} of the map range "
                          f"(tolerance {options.tolerance:g}); not written")
    int8 = _quantize_flavours(fp32, int8_flavours, *int8_inputs, meta, options) if int8_inputs else []  # the gate
    results, baseline = [], None
    if "fp32" in files:
        results.append(_write("fp32", fp32, files["fp32"], meta, parity, export_record("fp32", parity, source),
                              test, None, options))
        baseline = results[0].metrics
    elif test is not None:
        baseline = evaluate(load_detector(bundle.path / FP32_FILE, threads=options.threads).infer,
                            test, score=ScoreRule.from_manifest(meta)).metrics.to_dict()

    if "fp16" in files:
        fp16 = to_fp16_onnx(bundle.model)
        parity = compare(reference, run_session(fp16, images, options.threads))
        record = export_record("fp16", parity, source,
                               accuracy_on_cpu="ONNX Runtime CPU: fp16 tensors, fp32 kernels via inserted casts")
        results.append(_write("fp16", fp16, files["fp16"], meta, parity, record, test, baseline, options))

    for flavour, built in int8:
        variant, (calib, held_out) = f"int8-{flavour.name}", int8_inputs
        parity = compare(reference, run_session(built.model, images, options.threads))
        record = export_record(variant, parity, source, calibration=calib.record(options.calib_method),
                               quantization=quantization_record(flavour, built),
                               fidelity={"held_out": held_out.record(), **built.choice.to_dict(),
                                         "needed_float_units": built.needed})
        own, fp32_t = built.choice.fidelity.thresholds, fidelity.NormalThresholds.from_manifest(meta)
        lift = own.pixel_median - fp32_t.pixel_median
        log.info("%s thresholds by its own normal outputs: pixel %.4g (FP32 %.4g), image %.4g (FP32 %.4g); it lifts "
                 "the normal median by %+.3g, %.0f%% of FP32's normal spread (a floor fainter defects sink under)",
                 variant, own.pixel, fp32_t.pixel, own.image, fp32_t.image, lift, 100 * lift / fp32_t.spread)
        results.append(_write(variant, built.model, files[variant],
                              own.written_into(meta, _matched_note(variant, flavour, held_out)), parity, record, test,
                              baseline, options, flavour.lint_ignore, flavour.exact_check))
    return results


def _matched_note(variant: str, flavour: Int8Flavour, held_out: HeldOut) -> str:
    """Where an INT8 graph's own thresholds come from (fidelity.NormalThresholds.matched), for its dfr.json."""
    maths = ("its integer maths as written (what TensorRT computes)" if flavour.exact_check else
             "ONNX Runtime's CPU kernels on the exporting machine (x86 without VNNI saturates: README, INT8)")
    return (f"{variant}: FP32's thresholds moved by this graph's own quantile shift on {len(held_out.paths)} "
            f"held-out normal images, run with {maths}")


@dataclass
class HeldOut:
    """Normal images the INT8 graphs are checked on: never calibrated on, never the test set."""

    images: np.ndarray
    paths: list[Path]
    source: str

    def record(self) -> dict:
        return {"source": self.source, "count": len(self.paths), "files_sha256": files_digest(self.paths)}


def int8_images(bundle: Bundle, options: ExportOptions) -> tuple[CalibrationSet, HeldOut]:
    """Calibration images and held-out fidelity images, disjoint.

    Held out: the bundle's own validation split (re-drawn with the trainer's split and seed, checked
    against dfr.json training.val_hash); failing that, a seeded sample of the calibration candidates.
    """
    meta = bundle.manifest
    geometry = Geometry.from_manifest(meta)
    candidates = _calibration_candidates(bundle, options)
    training, config = training_images(bundle), meta.get("config", {})
    val = split_train_val(training, config.get("val_fraction", 0.0), config.get("seed", 0))[1] if training else []
    if val and files_digest(val) == meta["training"].get("val_hash"):
        held, source = val, "validation split of the bundle (dfr.json training.val_hash)"
    else:
        order = np.random.default_rng(options.calib_seed).permutation(len(candidates))
        count = min(HELD_OUT_IMAGES, len(candidates) // 5) or min(1, len(candidates) - 1)
        held = sorted(sorted(candidates)[i] for i in order[:count])
        source = f"seeded sample of {len(held)} calibration candidates, kept out of calibration"
        log.warning("validation split of the bundle not found: checking INT8 fidelity on %s", source)
    if not held:
        raise ValueError("the INT8 fidelity check needs held-out normal images and only one was found; "
                         "pass --calib DIR with more normal images")
    if len(held) < HELD_OUT_IMAGES:
        log.warning("the INT8 fidelity check and the INT8 graphs' own thresholds rest on %d held-out normal "
                    "images (%d or more give steadier verdicts): train with more normal images or a larger "
                    "val_fraction", len(held), HELD_OUT_IMAGES)
    held_set = set(held)
    calib = calibration_set([p for p in candidates if p not in held_set], options.calib_count, options.calib_seed,
                            geometry)
    loaded = read_images(held, geometry.sample, skip_bad=True)  # seen as the runtime sees them
    return calib, HeldOut(model_inputs(loaded.images, geometry.sampled()), loaded.paths, source)


def _quantize_flavours(fp32: onnx.ModelProto, flavours: list[Int8Flavour], calib: CalibrationSet, held_out: HeldOut,
                       meta: dict, options: ExportOptions) -> list[tuple[Int8Flavour, MixedInt8]]:
    """Every INT8 flavour with its float units; refuses (before anything is written) beyond the budget."""
    ref = fidelity.reference(fp32, held_out.images, fidelity.NormalThresholds.from_manifest(meta))
    budget = fidelity.FidelityBudget(options.fidelity_budget, options.score_budget)
    built, refused = [], []
    with int8_source(fp32, calib.images) as source:
        for flavour in flavours:
            log.info("quantizing INT8 (%s flavour) on %d images, %s; fidelity on %d held-out normal images",
                     flavour.name, len(calib.paths), options.calib_method, len(held_out.paths))
            result = mixed_int8(source, flavour, options.calib_method, ref, budget, options.float_blocks)
            built.append((flavour, result))
            if not result.choice.within_budget:
                need = (f"it would need float units {','.join(result.needed) or 'none'}" if result.needed is not None
                        else "no set of float units meets it")
                refused.append(f"int8-{flavour.name}: {'; '.join(result.choice.fidelity.problems(budget))} "
                               f"with float units {','.join(result.choice.float_units) or 'none'}; {need}")
    if refused and not options.allow_drop:
        raise FidelityError(f"INT8 beyond the fidelity budget on {len(held_out.paths)} held-out normal images: "
                            + " | ".join(refused) + "; nothing written (--float-blocks LIST or auto keeps units "
                            "float, --allow-drop writes it anyway)")
    for line in refused:
        log.warning("written beyond the fidelity budget (--allow-drop): %s", line)
    return built


def quantization_record(flavour: Int8Flavour, built: MixedInt8) -> dict:
    return {"flavour": flavour.name, "format": flavour.quant_format.name,
            "activations": flavour.activation_type.name, "weights": flavour.weight_type.name,
            "weight_bits": built.choice.weight_bits,
            "per_channel": flavour.per_channel, "quantized_ops": list(flavour.quantized_ops),
            "float_nodes": list(flavour.float_prefixes), "float_units": list(built.choice.float_units),
            "tensorrt_lint_skipped": sorted(flavour.lint_ignore)}


def _calibration_candidates(bundle: Bundle, options: ExportOptions) -> list[Path]:
    if options.calib is not None:
        return open_dataset(options.calib).train
    candidates = training_images(bundle)
    if not candidates:
        raise FileNotFoundError(
            f"the bundle's training data {bundle.manifest['training']['data']} is not available for INT8 "
            f"calibration; pass --calib DIR with normal images"
        )
    return candidates


def _eval_set(bundle: Bundle, options: ExportOptions) -> TestArrays | None:
    if options.eval_data is None:
        if options.max_drop is not None:
            raise ValueError("--max-drop needs --eval DIR to measure the accuracy drop")
        return None
    dataset = open_dataset(options.eval_data)
    require_test_set(dataset)
    return load_test_arrays(dataset, Geometry.from_manifest(bundle.manifest))


def _write(variant: str, model: onnx.ModelProto, path: Path, meta: dict, parity: Parity, record: dict,
           test: TestArrays | None, baseline: dict | None, options: ExportOptions,
           lint_ignore: frozenset[str] = frozenset(), exact: bool = False) -> Exported:
    """Write to a temporary name, evaluate there if asked, then rename into place (or refuse).

    `exact`: evaluate the integer maths as written (fidelity.graph_runner), for a graph another engine runs.
    """
    with atomic_path(path) as staging:
        save_model(model, staging, meta, record, lint_ignore)
        metrics = deltas = None
        if test is not None:
            predict = (fidelity.graph_runner(model, exact=True) if exact
                       else load_detector(staging, threads=options.threads).infer)
            metrics = evaluate(predict, test, score=ScoreRule.from_manifest(meta)).metrics.to_dict()
            if baseline is not None:
                deltas = {k: metrics[k] - baseline[k] for k in baseline}
                worst = -min(deltas.values())
                if options.max_drop is not None and worst > options.max_drop:
                    raise AccuracyDropError(
                        f"{variant} loses {worst:.4f} against FP32 ({_fmt(deltas)}), more than "
                        f"--max-drop {options.max_drop}; {path.name} not written"
                    )
            record["accuracy"] = {"data": str(options.eval_data), "metrics": metrics, "deltas_vs_fp32": deltas}
            set_metadata(model, meta, record)  # the file says how it scored, as the docstring promises
            onnx.save_model(model, staging)
    return Exported(variant, path, parity, metrics, deltas, record)


def _fmt(values: dict) -> str:
    return ", ".join(f"{k} {v:+.4f}" for k, v in values.items())
