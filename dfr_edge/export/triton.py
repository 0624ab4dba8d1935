"""A Triton Inference Server model repository from an exported ONNX file (contract 5).

    REPO/NAME/config.pbtxt        one config for every version: I/O, batching, instances, dfr.json
    REPO/NAME/<n>/model.onnx      each export adds version n+1; nothing is overwritten
    REPO/NAME_trt/...             tensorrt_plan model when the bundle has engines built from that file
    REPO/README.md                how to start the NGC container on the repository

Torch-free (it reads the exported file's metadata with onnxruntime), so a serving box can run it.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from dfr_edge.atomic import atomic_path
from dfr_edge.export.engine_cache import engines_dir
from dfr_edge.export.int8 import CPU_FLAVOUR
from dfr_edge.export.tensorrt import VARIANT_FILES as ENGINE_VARIANT_FILES
from dfr_edge.export.triton_config import RepositoryOptions, io_fields, model_config, to_pbtxt
from dfr_edge.export.triton_readme import REPOSITORY_README
from dfr_edge.manifest import write_text_atomic
from dfr_edge.runtime.tensorrt.engine_info import sidecar_path
from dfr_edge.runtime.triton.model import ServedModel

log = logging.getLogger(__name__)
VARIANT_FILES = {**ENGINE_VARIANT_FILES, "int8-cpu": CPU_FLAVOUR.filename}


@dataclass
class RepositoryExport:
    config: Path
    model_file: Path
    version: int
    plan_config: Path | None = None


def read_served_model(path: Path) -> tuple[dict, dict]:
    """dfr.json and the export record of an exported ONNX file (via onnxruntime, no torch)."""
    import onnxruntime as ort

    from dfr_edge.runtime.onnxrt import read_metadata

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return read_metadata(session, path)


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] \
        if model_dir.is_dir() else []
    return max(versions, default=0) + 1


def check_same_io(config_path: Path, model: ServedModel) -> None:
    """A repository model's versions share one config: refuse a model whose inputs/outputs differ."""
    if config_path.is_file() and to_pbtxt(io_fields(model)) not in config_path.read_text():
        raise ValueError(
            f"{config_path.parent} already serves a model with other inputs or outputs (another image size?); "
            f"export under another --name, or move that folder away"
        )


def engine_plans(onnx_file: Path, max_batch: int) -> dict[str, Path]:
    """Engines `dfr-export --engine` built from exactly this ONNX file, newest per GPU architecture.

    Read from the sidecars in the bundle's engines/ folder: same ONNX sha256, no DLA core (Triton
    runs plans on GPUs) and an optimization profile that reaches the served max batch.
    """
    from dfr_edge.digest import sha256_file
    from dfr_edge.runtime.tensorrt.engine_info import engine_key, read_sidecar

    folder = engines_dir(onnx_file.parent)  # where dfr-export --engine puts them, each with a JSON sidecar
    if not folder.is_dir():
        return {}
    digest, plans = sha256_file(onnx_file), {}
    for engine in sorted(folder.glob("*.engine"), key=lambda path: path.stat().st_mtime):
        try:
            key = engine_key(read_sidecar(engine))
        except (FileNotFoundError, ValueError) as exc:
            log.warning("%s left out of the Triton repository: %s", engine.name, exc)
            continue
        if key.onnx_sha256 == digest and key.dla_core is None and key.max_batch >= max_batch:
            plans[key.compute_capability] = engine
    return plans


def write_repository(onnx_file: Path, repo: Path, options: RepositoryOptions) -> RepositoryExport:
    """Add `onnx_file` as a new version of REPO/NAME (and NAME_trt for built engines); write the configs."""
    manifest, export_info = read_served_model(onnx_file)
    model = options.model
    if (model.height, model.width) != (manifest["input"]["height"], manifest["input"]["width"]):
        raise ValueError(f"{onnx_file} takes {manifest['input']['height']}x{manifest['input']['width']} frames, "
                         f"not {model.height}x{model.width}")
    model_dir = repo / model.name
    config = model_config(options, manifest, export_info)
    check_same_io(model_dir / "config.pbtxt", model)
    version = next_version(model_dir)
    target = _copy_version(onnx_file, model_dir / str(version) / "model.onnx")
    _write_text(model_dir / "config.pbtxt", config)
    result = RepositoryExport(model_dir / "config.pbtxt", target, version)

    plans = engine_plans(onnx_file, model.max_batch_size)
    if plans:
        plan_dir = repo / f"{model.name}_trt"
        names = {cc: f"model.sm{cc.replace('.', '')}.plan" for cc in plans}
        plan_config = model_config(options, manifest, export_info, plan_files=names)
        check_same_io(plan_dir / "config.pbtxt", model)
        plan_version = next_version(plan_dir)
        for cc, engine in plans.items():
            plan = _copy_version(engine, plan_dir / str(plan_version) / names[cc])
            _copy_version(sidecar_path(engine), plan.with_name(plan.name + ".json"))  # what it was built for
        _write_text(plan_dir / "config.pbtxt", plan_config)
        result.plan_config = plan_dir / "config.pbtxt"
    _write_text(repo / "README.md", REPOSITORY_README)
    return result


def _copy_version(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # next_version() picked a fresh folder: only a concurrent export gets here
        raise FileExistsError(f"{target} already exists; nothing was overwritten")
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def variant_file(bundle: Path, variant: str) -> Path:
    if variant not in VARIANT_FILES:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANT_FILES)}")
    return bundle / VARIANT_FILES[variant]
