"""Tests for dfr_edge.export: the fused FP32 graph, the FP16 and INT8 variants, calibration, the
accuracy report and the safety rails (no silent overwrite, parity guard, refused drops).

Exports write into the bundle directory, so every test works on a copy of `tiny_bundle`; the
module fixture `exported` exports everything once (FP32, FP16, both INT8 flavours, with --eval)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from dfr_edge import manifest as manifest_io
from dfr_edge.bundle import Bundle, load_bundle
from dfr_edge.data.images import load_images
from dfr_edge.data.mvtec import open_dataset
from dfr_edge.digest import files_digest
from dfr_edge.export.fidelity import NormalThresholds
from dfr_edge.export.int8 import (
    CPU_FLAVOUR,
    FLAVOURS,
    TENSORRT_FLAVOUR,
    calibration_set,
)
from dfr_edge.export.pipeline import (
    AccuracyDropError,
    ExportOptions,
    ParityError,
    export_bundle,
)
from dfr_edge.export.trt_lint import lint_for_tensorrt
from dfr_edge.geometry import Geometry, Tiling
from dfr_edge.predict import predict_torch
from dfr_edge.runtime import load_detector
from dfr_edge.runtime.onnxrt import EXPORT_INFO_KEY
from dfr_edge.trainer import split_train_val

TINY_SIZE = 64  # tiny_bundle's input size (conftest.TINY_SIZE)

FILES = {
    "fp32": "model.onnx",
    "fp16": "model.fp16.onnx",
    "int8-tensorrt": TENSORRT_FLAVOUR.filename,
    "int8-cpu": CPU_FLAVOUR.filename,
}
LINT_IGNORE = {"fp32": frozenset(), "fp16": frozenset(), **{f"int8-{f.name}": f.lint_ignore for f in FLAVOURS.values()}}
METRICS = {"image_auroc", "pixel_auroc", "pro"}
QDQ = ("QuantizeLinear", "DequantizeLinear")


def copy_bundle(src: Path, dst: Path) -> Path:
    """A copy of the bundle without exported files (exports write into the bundle folder)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.onnx"))
    return dst


def leftovers(folder: Path) -> list[str]:
    """Staging or temporary files an interrupted or refused export could leave behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def sample_images(data: Path, n: int) -> np.ndarray:
    """n test images (good and defective) at the model size."""
    samples = open_dataset(data).test
    picked = [samples[i].path for i in np.linspace(0, len(samples) - 1, n).astype(int)]
    return load_images(picked, TINY_SIZE, TINY_SIZE).images


@pytest.fixture(scope="module")
def loaded(tiny_bundle) -> Bundle:
    """tiny_bundle loaded once; `at(loaded, folder)` points it at a copy (building the model costs seconds)."""
    return load_bundle(tiny_bundle)


def at(bundle: Bundle, folder: Path) -> Bundle:
    """The loaded bundle as if loaded from `folder` (a copy of it, possibly with an edited dfr.json)."""
    return dataclasses.replace(bundle, path=folder, manifest=manifest_io.read(folder / manifest_io.MANIFEST_NAME))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_bundle, tiny_data, loaded):
    """Every variant of a copy of tiny_bundle, exported once, with the accuracy report."""
    bundle = copy_bundle(tiny_bundle, tmp_path_factory.mktemp("export") / "bundle")
    # Full INT8 whatever the fidelity check says: these tests are about the graphs (the search and the
    # gate are tested in test_int8_fidelity.py).
    options = ExportOptions(fp16=True, int8=True, eval_data=tiny_data, float_blocks="none", allow_drop=True)
    results = export_bundle(at(loaded, bundle), options)
    return bundle, {r.variant: r for r in results}


@pytest.fixture(scope="module")
def models(exported):
    bundle, _ = exported
    return {variant: onnx.load(bundle / name) for variant, name in FILES.items()}


@pytest.fixture
def traced(monkeypatch, models):
    """Skip re-tracing in the tests of the safety rails: the pipeline gets the graphs the module
    fixture exported (tracing itself is tested there)."""
    import dfr_edge.export.pipeline as pipeline

    def fresh(variant):
        model = onnx.ModelProto()
        model.CopyFrom(models[variant])
        return model

    monkeypatch.setattr(pipeline, "to_onnx", lambda model, size: fresh("fp32"))
    monkeypatch.setattr(pipeline, "to_fp16_onnx", lambda model: fresh("fp16"))


def shape(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def elem_type(value_info: onnx.ValueInfoProto) -> int:
    return value_info.type.tensor_type.elem_type


# ----------------------------------------------------------------------------------------------
# What one export writes


def test_writes_every_variant(exported):
    bundle, results = exported
    assert list(results) == list(FILES)
    for variant, name in FILES.items():
        assert results[variant].path == bundle / name and results[variant].path.is_file()
    assert leftovers(bundle) == []


def test_fp32_graph_signature(models):
    m = models["fp32"]
    onnx.checker.check_model(m, full_check=True)
    assert [(i.name, elem_type(i)) for i in m.graph.input] == [("image", TensorProto.UINT8)]
    (image,) = m.graph.input
    assert image.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert shape(image) == ["batch", TINY_SIZE, TINY_SIZE, 3]
    outputs = {o.name: o for o in m.graph.output}
    assert list(outputs) == ["anomaly_map", "score"]
    assert elem_type(outputs["anomaly_map"]) == elem_type(outputs["score"]) == TensorProto.FLOAT
    assert shape(outputs["anomaly_map"]) == ["batch", TINY_SIZE, TINY_SIZE]
    assert shape(outputs["score"]) == ["batch"]
    assert [(o.domain, o.version) for o in m.opset_import if o.domain in ("", "ai.onnx")] == [("", 17)]


def test_fp32_graph_is_folded(models):
    ops = {n.op_type for n in models["fp32"].graph.node}
    assert not ops & {"Shape", "ConstantOfShape"}
    assert any(n.name.startswith("/head/") for n in models["fp32"].graph.node)


@pytest.mark.parametrize("variant", list(FILES))
def test_metadata_holds_manifest_and_export_record(exported, models, variant):
    bundle, results = exported
    meta = metadata(models[variant])
    record = json.loads(meta[EXPORT_INFO_KEY])
    embedded = json.loads(meta[manifest_io.ONNX_METADATA_KEY])
    expected = manifest_io.read(bundle / manifest_io.MANIFEST_NAME)
    if variant.startswith("int8"):  # the bundle's dfr.json, thresholding by the graph's own normal outputs
        own = NormalThresholds(**record["fidelity"]["fidelity"]["thresholds"])
        expected = own.written_into(expected, embedded["thresholds"]["matched"])
    assert embedded == expected
    assert record["variant"] == variant and record["opset"] == 17
    parity = record["parity_vs_torch_fp32"]
    assert parity["source"] == "training images" and parity["images"] > 0
    assert parity["map_range"] > 0 and parity["relative"] == pytest.approx(parity["map_max_abs"] / parity["map_range"])
    assert parity == {**results[variant].parity.to_dict(), "source": "training images"}
    if variant == "fp32":
        assert parity["relative"] <= ExportOptions().tolerance
    # The runtime reads the same two records back.
    detector = load_detector(bundle / FILES[variant])
    assert detector.backend.manifest == json.loads(meta[manifest_io.ONNX_METADATA_KEY])
    assert detector.backend.export_info == record


@pytest.mark.parametrize("batch", [1, 3])
def test_fp32_matches_torch_at_any_batch(exported, loaded, tiny_data, batch):
    bundle, _ = exported
    images = sample_images(tiny_data, batch)
    ref_map, ref_score = predict_torch(loaded.model, images)
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    amap, score = session.run(["anomaly_map", "score"], {"image": images})
    assert amap.shape == (batch, TINY_SIZE, TINY_SIZE) and score.shape == (batch,)
    assert amap.dtype == score.dtype == np.float32
    bound = 1e-4 * float(ref_map.max() - ref_map.min())
    assert bound > 0
    assert np.abs(amap - ref_map).max() <= bound
    assert np.abs(score - ref_score).max() <= bound


@pytest.mark.parametrize("variant", ["fp16", "int8-tensorrt", "int8-cpu"])
def test_reduced_variants_run_at_any_batch(exported, tiny_data, variant):
    bundle, _ = exported
    images = sample_images(tiny_data, 3)
    detector = load_detector(bundle / FILES[variant])
    one_map, one_score = detector.infer(images[:1])
    amap, score = detector.infer(images)
    assert amap.shape == (3, TINY_SIZE, TINY_SIZE) and score.shape == (3,)
    assert np.isfinite(amap).all() and np.isfinite(score).all()
    np.testing.assert_allclose(amap[:1], one_map, rtol=0, atol=1e-3 * float(np.ptp(amap)))
    # Close to FP32 (loosely: a reduced variant, not a broken one).
    ref_map, _ = load_detector(bundle / "model.onnx").infer(images)
    assert np.abs(amap - ref_map).max() < 0.25 * float(np.ptp(ref_map))


# ----------------------------------------------------------------------------------------------
# TensorRT hygiene of each variant


@pytest.mark.parametrize("variant", list(FILES))
def test_every_variant_passes_tensorrt_lint(models, variant):
    onnx.checker.check_model(models[variant], full_check=True)
    assert lint_for_tensorrt(models[variant], ignore=LINT_IGNORE[variant]) == []


def test_tensorrt_int8_is_symmetric_int8_qdq(models):
    m = models["int8-tensorrt"]
    assert lint_for_tensorrt(m) == []  # the full lint, nothing ignored
    inits = {t.name: t for t in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    qdq = [n for n in m.graph.node if n.op_type in QDQ]
    assert {n.op_type for n in qdq} == set(QDQ)
    for n in qdq:
        assert len(n.input) == 3, f"{n.name} has no explicit zero point"
        zp = inits[n.input[2]]
        assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any(), n.name
        if n.op_type == "DequantizeLinear":
            src = n.input[0]
            if src in inits:  # a weight (never an int32 bias)
                assert inits[src].data_type == TensorProto.INT8, n.name
            else:
                assert producer[src].op_type == "QuantizeLinear", n.name
    assert not any(t.data_type == TensorProto.INT32 for t in m.graph.initializer)
    assert not any(n.op_type.startswith("QLinear") or n.domain not in ("", "ai.onnx") for n in m.graph.node)


def test_tensorrt_int8_head_reads_float(models):
    m = models["int8-tensorrt"]
    producer = {o: n for n in m.graph.node for o in n.output}
    head = [n for n in m.graph.node if n.name.startswith("/head/")]
    assert head
    for n in head:
        assert n.op_type not in QDQ, n.name
        for name in n.input:
            assert name not in producer or producer[name].op_type != "DequantizeLinear", (n.name, name)
    # The difference compares the float features with the float reconstruction.
    sub = next(n for n in head if n.op_type == "Sub")
    assert {producer[i].op_type for i in sub.input} <= {"Conv", "Concat"}


def test_fp16_body_is_half_head_and_io_float32(models):
    m = models["fp16"]
    inits = {t.name: t for t in m.graph.initializer}
    head = [n for n in m.graph.node if n.name.startswith("/head/")]
    body = [n for n in m.graph.node if not n.name.startswith("/head/")]
    half_in_body = [i for n in body for i in n.input if i in inits and inits[i].data_type == TensorProto.FLOAT16]
    assert half_in_body, "no float16 weights: the body was not converted"
    assert all(inits[i].data_type != TensorProto.FLOAT16 for n in head for i in n.input if i in inits)
    # Every floating tensor the head reads or writes is float32 (shape inference gives the types).
    typed = onnx.shape_inference.infer_shapes(m).graph
    types = {vi.name: elem_type(vi) for vi in [*typed.input, *typed.output, *typed.value_info]}
    types.update({name: t.data_type for name, t in inits.items()})
    floating = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    head_tensors = [t for n in head for t in [*n.input, *n.output] if t and types.get(t) in floating]
    assert head_tensors and all(types[t] == TensorProto.FLOAT for t in head_tensors)
    assert any(types.get(t) == TensorProto.FLOAT16 for n in body for t in n.output)
    assert [elem_type(i) for i in m.graph.input] == [TensorProto.UINT8]
    assert [elem_type(o) for o in m.graph.output] == [TensorProto.FLOAT, TensorProto.FLOAT]


def test_cpu_int8_is_qoperator(models):
    m = models["int8-cpu"]
    ops = {n.op_type for n in m.graph.node}
    assert "QLinearConv" in ops
    # Without its ignore set the lint says why it is no TensorRT input; only those rules fire.
    found = {f.rule for f in lint_for_tensorrt(m)}
    assert "op-unsupported" in found and found <= CPU_FLAVOUR.lint_ignore


# ----------------------------------------------------------------------------------------------
# INT8 calibration


def test_calibration_is_recorded(exported, tiny_data):
    bundle, results = exported
    held_out = split_train_val(open_dataset(tiny_data).train, 0.25, 0)[1]  # tiny_config's split: fidelity images
    train = [p for p in open_dataset(tiny_data).train if p not in held_out]
    for flavour in FLAVOURS.values():
        record = json.loads(metadata(onnx.load(bundle / flavour.filename))[EXPORT_INFO_KEY])
        calib = record["calibration"]
        assert calib == {"method": "minmax", "count": len(train), "seed": 0, "files_sha256": files_digest(train),
                         "files": sorted(p.name for p in train)}
        assert record["quantization"]["flavour"] == flavour.name
        assert record["quantization"]["tensorrt_lint_skipped"] == sorted(flavour.lint_ignore)
        assert results[f"int8-{flavour.name}"].info["calibration"] == calib


def test_calibration_set_is_seeded(tiny_data):
    train = open_dataset(tiny_data).train
    assert len(train) >= 8
    a = calibration_set(train, 5, 0, Geometry(32, 32))
    b = calibration_set(list(train), 5, 0, Geometry(32, 32))
    c = calibration_set(train, 5, 1, Geometry(32, 32))
    assert a.paths == b.paths and a.digest == b.digest
    assert len(a.paths) == 5 and a.images.shape == (5, 32, 32, 3) and a.images.dtype == np.uint8
    assert a.paths == sorted(a.paths) and set(a.paths) <= set(train)
    assert c.paths != a.paths and c.digest != a.digest
    assert a.record("entropy") == {"method": "entropy", "count": 5, "seed": 0, "files_sha256": a.digest,
                                   "files": [p.name for p in a.paths]}
    assert len(calibration_set(train, 1000, 0, Geometry(32, 32)).paths) == len(train)
    tiled = calibration_set(train, 2, 0, Geometry(32, 32, tiling=Tiling((64, 64), 0)))  # 128 px: 2 x 2 tiles
    assert len(tiled.paths) == 2 and tiled.images.shape == (8, 32, 32, 3)  # calibrated on what the runtime feeds


def test_calibration_refuses_no_images():
    with pytest.raises(ValueError, match="real normal images"):
        calibration_set([], 10, 0, Geometry(32, 32))


def test_calibration_warns_on_few_images(tiny_data, caplog):
    train = open_dataset(tiny_data).train
    with caplog.at_level(logging.WARNING, logger="dfr_edge.export.int8"):
        calibration_set(train, 3, 0, Geometry(32, 32))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "dfr_edge.export.int8"]
    assert len(warnings) == 1 and "only 3 images" in warnings[0].getMessage()


# ----------------------------------------------------------------------------------------------
# Accuracy report and --max-drop


def test_accuracy_report_vs_fp32(exported):
    bundle, results = exported
    fp32 = results["fp32"].metrics
    assert set(fp32) == METRICS and all(0.0 <= v <= 1.0 for v in fp32.values())
    assert results["fp32"].deltas is None
    for variant in ("fp16", "int8-tensorrt", "int8-cpu"):
        r = results[variant]
        assert set(r.metrics) == set(r.deltas) == METRICS
        for k in METRICS:
            assert r.deltas[k] == pytest.approx(r.metrics[k] - fp32[k])
    # The written file says how it scored.
    for variant, name in FILES.items():
        record = json.loads(metadata(onnx.load(bundle / name))[EXPORT_INFO_KEY])
        assert record["accuracy"]["metrics"] == results[variant].metrics
        assert record["accuracy"]["deltas_vs_fp32"] == results[variant].deltas


def test_max_drop_refuses_the_variant(tmp_path, tiny_bundle, tiny_data, loaded, traced):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    options = ExportOptions(fp16=True, eval_data=tiny_data, max_drop=-1.0)  # no variant can gain 1.0
    with pytest.raises(AccuracyDropError, match="fp16.*model.fp16.onnx not written"):
        export_bundle(at(loaded, bundle), options)
    assert not (bundle / "model.fp16.onnx").exists()
    assert (bundle / "model.onnx").is_file()  # FP32 is the baseline, never refused
    assert leftovers(bundle) == []


def test_max_drop_needs_eval_data(tmp_path, tiny_bundle, loaded):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    with pytest.raises(ValueError, match="--eval"):
        export_bundle(at(loaded, bundle), ExportOptions(fp16=True, max_drop=0.01))
    assert not list(bundle.glob("*.onnx")) and leftovers(bundle) == []


# ----------------------------------------------------------------------------------------------
# Safety rails


def test_refuses_to_overwrite(tmp_path, exported, loaded):
    src, _ = exported
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    before = {p.name: p.stat().st_mtime_ns for p in bundle.iterdir()}
    with pytest.raises(FileExistsError, match="already exists.*model.onnx.*--force"):
        export_bundle(at(loaded, bundle), ExportOptions())
    assert {p.name: p.stat().st_mtime_ns for p in bundle.iterdir()} == before


def test_writes_only_the_missing_files(tmp_path, exported, loaded, traced):
    """FP32 is there: adding FP16 writes model.fp16.onnx and leaves model.onnx untouched."""
    src, _ = exported
    bundle = copy_bundle(src, tmp_path / "bundle")
    shutil.copy2(src / "model.onnx", bundle / "model.onnx")
    before = (bundle / "model.onnx").stat()
    (result,) = export_bundle(at(loaded, bundle), ExportOptions(fp16=True))
    assert result.variant == "fp16" and (bundle / "model.fp16.onnx").is_file()
    after = (bundle / "model.onnx").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert leftovers(bundle) == []


def test_force_replaces(tmp_path, exported, loaded, traced):
    src, _ = exported
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    old = (bundle / "model.onnx").stat()
    (results,) = export_bundle(at(loaded, bundle), ExportOptions(force=True))
    new = (bundle / "model.onnx").stat()
    assert results.path == bundle / "model.onnx"
    assert (new.st_ino, new.st_mtime_ns) != (old.st_ino, old.st_mtime_ns)
    assert json.loads(metadata(onnx.load(bundle / "model.onnx"))[EXPORT_INFO_KEY])["variant"] == "fp32"
    assert leftovers(bundle) == []


def test_parity_guard(tmp_path, tiny_bundle, loaded, traced, monkeypatch):
    import dfr_edge.export.pipeline as pipeline

    real = pipeline.run_session

    def off_by_one(model, images, threads=None):
        amap, score = real(model, images, threads)
        return amap + 1.0, score

    monkeypatch.setattr(pipeline, "run_session", off_by_one)
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    with pytest.raises(ParityError, match="differs from torch.*not written"):
        export_bundle(at(loaded, bundle), ExportOptions())
    assert not (bundle / "model.onnx").exists() and leftovers(bundle) == []


@pytest.mark.slow
def test_missing_training_data_needs_calib(tmp_path, tiny_bundle, tiny_data, loaded, traced):
    bundle = copy_bundle(tiny_bundle, tmp_path / "bundle")
    meta = manifest_io.read(bundle / manifest_io.MANIFEST_NAME)
    manifest_io.update(bundle / manifest_io.MANIFEST_NAME, training={**meta["training"], "data": str(tmp_path / "gone")})
    with pytest.raises(FileNotFoundError, match="--calib"):
        export_bundle(at(loaded, bundle), ExportOptions(int8=True))
    assert not list(bundle.glob("*.onnx")) and leftovers(bundle) == []  # failed before writing FP32

    options = ExportOptions(int8=True, calib=tiny_data, float_blocks="none", allow_drop=True)
    results = export_bundle(at(loaded, bundle), options)
    assert [r.variant for r in results] == ["fp32", "int8-tensorrt", "int8-cpu"]
    train = open_dataset(tiny_data).train
    for r in results[1:]:
        assert r.path.is_file()
        held_out = r.info["fidelity"]["held_out"]  # without the validation split: a seeded sample of --calib
        assert held_out["source"].startswith("seeded sample") and held_out["count"] == len(train) // 5
        calibrated = r.info["calibration"]["files"]
        assert len(calibrated) == len(train) - held_out["count"] and set(calibrated) <= {p.name for p in train}
    # Without the training images, parity is checked on seeded noise, and says so.
    assert results[0].info["parity_vs_torch_fp32"]["source"] == "seeded noise"
