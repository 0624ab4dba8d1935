"""What an engine is and where it may run: its cache key, JSON sidecar and the compatibility check.

A TensorRT plan only runs on the TensorRT version and GPU it was built for (ARCHITECTURE.md,
contract 3). Every engine therefore sits beside `<engine>.json`: the bundle's dfr.json plus the
build facts. The loader compares those facts with the machine before deserializing, so a wrong
engine fails with a message naming both sides and the command that rebuilds it, instead of a
TensorRT deserialization error.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from dfr_edge import manifest as manifest_io
from dfr_edge.runtime.cuda import DeviceInfo

SIDECAR_SCHEMA = "dfr-edge/engine"
SIDECAR_VERSION = 1


class EngineMismatchError(RuntimeError):
    """The engine was built for another TensorRT version or GPU than this machine has."""


@dataclass(frozen=True)
class EngineKey:
    """Everything that makes one plan file differ from another (and so goes into its name)."""

    tensorrt: str
    gpu: str
    compute_capability: str  # "8.7"
    precision: str  # fp32 | fp16 | int8
    max_batch: int
    dla_core: int | None
    onnx_sha256: str
    version_compatible: bool = False

    def filename(self) -> str:
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu.lower()).strip("-") or "gpu"
        parts = ["model", self.precision, f"trt{self.tensorrt}", gpu, f"sm{self.compute_capability.replace('.', '')}",
                 f"b{self.max_batch}"]
        if self.dla_core is not None:
            parts.append(f"dla{self.dla_core}")
        if self.version_compatible:
            parts.append("vc")
        parts.append(self.onnx_sha256[:12])
        return ".".join(parts) + ".engine"


def sidecar_path(engine: Path) -> Path:
    return Path(engine).with_suffix(Path(engine).suffix + ".json")


def read_sidecar(engine: Path) -> dict:
    """The engine's sidecar, validated; without it nothing says where the plan may run."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {Path(engine).name} cannot say which TensorRT and GPU it "
                                f"was built for; rebuild it with dfr-export BUNDLE --engine")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rebuild the engine with dfr-export --engine") from exc
    if not isinstance(info, dict) or info.get("schema") != SIDECAR_SCHEMA:
        raise ValueError(f"{path} is not a dfr-edge engine sidecar; rebuild the engine with dfr-export --engine")
    manifest_io.validate(info.get("dfr"), f"{path} (dfr)")
    return info


def engine_key(info: dict) -> EngineKey:
    return EngineKey(**info["key"])


def rebuild_command(info: dict) -> str:
    key = engine_key(info)
    parts = ["dfr-export", info.get("bundle", "BUNDLE"), "--engine", "--precision", key.precision,
             "--max-batch", str(key.max_batch)]
    if key.dla_core is not None:
        parts += ["--dla-core", str(key.dla_core)]
    if key.version_compatible:
        parts.append("--version-compatible")
    return " ".join(parts)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def check_compatible(info: dict, tensorrt_version: str, device: DeviceInfo, engine: Path) -> None:
    """Refuse an engine built for another TensorRT version, GPU or compute capability."""
    key = engine_key(info)
    here_cc = f"{device.compute_capability[0]}.{device.compute_capability[1]}"
    built = f"TensorRT {key.tensorrt} on {key.gpu} (compute capability {key.compute_capability})"
    this = f"TensorRT {tensorrt_version} on {device.name} (compute capability {here_cc})"
    rebuild = f"rebuild it on this machine: {rebuild_command(info)}"
    if key.gpu != device.name or key.compute_capability != here_cc:
        raise EngineMismatchError(f"{Path(engine).name} was built for {built}; this machine has {this}. "
                                  f"Engines are specific to the GPU model; {rebuild}")
    if key.tensorrt == tensorrt_version:
        return
    if not key.version_compatible:
        raise EngineMismatchError(f"{Path(engine).name} was built with {built}; this machine runs {this}. "
                                  f"Plans only load on the TensorRT version that built them; {rebuild} "
                                  f"(or build with --version-compatible for a fleet on mixed TensorRT versions)")
    if _version_tuple(tensorrt_version) < _version_tuple(key.tensorrt):
        raise EngineMismatchError(
            f"{Path(engine).name} is a version-compatible engine built with TensorRT {key.tensorrt}; such engines "
            f"load on TensorRT {key.tensorrt} or newer (the full runtime or the lean runtime, tensorrt-lean), "
            f"but this machine runs TensorRT {tensorrt_version}: upgrade TensorRT or {rebuild}")


def describe_device(device: DeviceInfo) -> dict:
    return {**asdict(device), "compute_capability": f"{device.compute_capability[0]}.{device.compute_capability[1]}"}
