"""Writing an exported ONNX file: metadata, checker, TensorRT lint, atomic save."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from dfr_edge import manifest as manifest_io
from dfr_edge.atomic import atomic_path
from dfr_edge.export.trt_lint import check_for_tensorrt
from dfr_edge.runtime.onnxrt import EXPORT_INFO_KEY


def set_metadata(model: onnx.ModelProto, meta: dict, export_info: dict) -> None:
    """Embed dfr.json and the export record, replacing any earlier values."""
    values = {manifest_io.ONNX_METADATA_KEY: manifest_io.dumps(meta), EXPORT_INFO_KEY: json.dumps(export_info)}
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)


def save_model(model: onnx.ModelProto, path: Path, meta: dict, export_info: dict,
               lint_ignore: frozenset[str] = frozenset()) -> Path:
    """Validate (ONNX checker, TensorRT lint) and write atomically next to the target."""
    set_metadata(model, meta, export_info)
    onnx.checker.check_model(model, full_check=True)
    check_for_tensorrt(model, ignore=lint_ignore)
    with atomic_path(path) as tmp:
        onnx.save_model(model, tmp)
    return Path(path)
