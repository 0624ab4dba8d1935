"""Where engines and timing caches live in a bundle, their sidecars, and the equivalent trtexec line.

Layout: BUNDLE/engines/<key>.engine + <key>.engine.json (see runtime/tensorrt/engine_info.py for
the key) and one timing cache per TensorRT version and GPU, reused by every later build there.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path

from dfr_edge import __version__
from dfr_edge.atomic import atomic_path
from dfr_edge.manifest import write_text_atomic
from dfr_edge.runtime.cuda import DeviceInfo
from dfr_edge.runtime.tensorrt.engine_info import (
    SIDECAR_SCHEMA,
    SIDECAR_VERSION,
    EngineKey,
    describe_device,
    sidecar_path,
)

ENGINES_DIR = "engines"


def engines_dir(bundle: Path) -> Path:
    return Path(bundle) / ENGINES_DIR


def timing_cache_path(bundle: Path, tensorrt_version: str, device: DeviceInfo) -> Path:
    """Timing caches are only valid for one TensorRT version and GPU, like the engines."""
    gpu = re.sub(r"[^a-z0-9]+", "-", device.name.lower()).strip("-")
    return engines_dir(bundle) / f"timing.trt{tensorrt_version}.{gpu}.sm{device.sm}.cache"


def write_bytes_atomic(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(memoryview(data))


def write_sidecar(engine: Path, key: EngineKey, manifest: dict, build: dict, device: DeviceInfo,
                  bundle: Path) -> dict:
    """dfr.json plus the build facts, beside the engine, so the engine can say what it is."""
    sidecar = {
        "schema": SIDECAR_SCHEMA,
        "schema_version": SIDECAR_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": str(Path(bundle).resolve()),
        "key": key.__dict__,
        "device": describe_device(device),
        "build": {**build, "dfr_edge": __version__},
        "dfr": manifest,
    }
    write_text_atomic(sidecar_path(engine), json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def trtexec_command(onnx: Path, engine: Path, timing_cache: Path, input_name: str, shapes: list[tuple[int, ...]],
                    workspace_mib: int, opt_level: int | None, strongly_typed_flag: bool,
                    builder_flags: tuple[str, ...], dla_core: int | None) -> str:
    """The same build as a trtexec command line (what many Jetson users run instead)."""
    minimum, opt, maximum = ("x".join(str(d) for d in s) for s in shapes)
    parts = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}"]
    if strongly_typed_flag:
        parts.append("--stronglyTyped")
    parts += [f"--minShapes={input_name}:{minimum}", f"--optShapes={input_name}:{opt}",
              f"--maxShapes={input_name}:{maximum}", f"--memPoolSize=workspace:{workspace_mib}M",
              f"--timingCacheFile={timing_cache}"]
    if opt_level is not None:
        parts.append(f"--builderOptimizationLevel={opt_level}")
    if "FP16" in builder_flags:
        parts.append("--fp16")
    if dla_core is not None:
        parts.append(f"--useDLACore={dla_core}")
    if "GPU_FALLBACK" in builder_flags:
        parts.append("--allowGPUFallback")
    if "VERSION_COMPATIBLE" in builder_flags:
        parts.append("--versionCompatible")
    return " ".join(parts)
