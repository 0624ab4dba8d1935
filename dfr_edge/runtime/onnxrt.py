"""ONNX Runtime backend: CPU, CUDA or TensorRT execution provider over any exported variant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dfr_edge import manifest as manifest_io
from dfr_edge.errors import UnusableFileError
from dfr_edge.runtime.backend import check_images

EXPORT_INFO_KEY = "dfr.export"
DEFAULT_MAX_BATCH = 8  # frames per inference call: bounds memory on CPU, the TensorRT profile's maximum
PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def _import_ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("onnxruntime is not installed: pip install 'dfr-edge[runtime]'") from exc
    return onnxruntime


def provider_list(provider: str, *, cache_dir: Path | None, height: int, width: int, max_batch: int,
                  device_id: int = 0) -> list:
    """Execution providers in priority order, with engine and timing caches for TensorRT."""
    if provider not in PROVIDER_NAMES:
        raise ValueError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDER_NAMES)}")
    chain: list = []
    if provider == "tensorrt":
        options = {
            "device_id": device_id,
            "trt_profile_min_shapes": f"image:1x{height}x{width}x3",
            "trt_profile_opt_shapes": f"image:1x{height}x{width}x3",
            "trt_profile_max_shapes": f"image:{max_batch}x{height}x{width}x3",
        }
        if cache_dir is not None:
            options.update(
                trt_engine_cache_enable=True,
                trt_engine_cache_path=str(cache_dir),
                trt_timing_cache_enable=True,
                trt_timing_cache_path=str(cache_dir),
            )
        chain.append(("TensorrtExecutionProvider", options))
    if provider in ("tensorrt", "cuda"):
        chain.append(("CUDAExecutionProvider", {"device_id": device_id}))
    chain.append("CPUExecutionProvider")
    return chain


class OnnxRuntimeBackend:
    """`spin=False` stops idle worker threads from busy-waiting: several sessions on one box (server
    instances, several cameras) then stop stealing each other's cores."""

    def __init__(self, path: Path, provider: str = "cpu", threads: int | None = None,
                 cache_dir: Path | None = None, max_batch: int = DEFAULT_MAX_BATCH, device_id: int = 0,
                 spin: bool = True):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        ort = _import_ort()
        available = ort.get_available_providers()
        if provider not in PROVIDER_NAMES:
            raise ValueError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDER_NAMES)}")
        if PROVIDER_NAMES[provider] not in available:
            raise RuntimeError(
                f"execution provider {provider!r} is not available in this onnxruntime "
                f"(available: {', '.join(available)}); install onnxruntime-gpu for cuda/tensorrt"
            )

        def session(providers: list, optimize: bool = True):
            options = ort.SessionOptions()
            options.graph_optimization_level = (
                ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            )
            if threads:
                options.intra_op_num_threads = threads
            if not spin:
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(str(path), options, providers=providers)

        try:  # the CPU session only reads the file: if it fails, the file is the problem
            cpu = session(["CPUExecutionProvider"], optimize=provider == "cpu")
        except _load_errors(ort) as exc:
            reason = " ".join(str(exc).split()).split("failed:")[-1]
            raise UnusableFileError(path, f"not a loadable ONNX model ({reason})",
                                    "use a model.*.onnx file written by dfr-export, or export again") from None
        self.manifest, self.export_info = read_metadata(cpu, path)
        self.height, self.width = self.manifest["input"]["height"], self.manifest["input"]["width"]
        if provider == "cpu":
            self.session = cpu
        else:  # the CPU session above only read the metadata the provider options need
            if cache_dir is not None:
                Path(cache_dir).mkdir(parents=True, exist_ok=True)
            self.session = session(provider_list(provider, cache_dir=cache_dir, height=self.height,
                                                 width=self.width, max_batch=max_batch, device_id=device_id))
        self.name = f"onnxruntime:{self.session.get_providers()[0]}"
        self.path = Path(path)
        self.max_batch = max_batch

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_images(images, self.height, self.width)
        amap, score = self.session.run(["anomaly_map", "score"], {"image": np.ascontiguousarray(images)})
        return amap, score


def _load_errors(ort) -> tuple[type[Exception], ...]:
    """What ONNX Runtime raises for a file it cannot load (its own classes, not Python's)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoModel", "NoSuchFile", "NotImplemented",
             "RuntimeException")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


def read_metadata(session, path: Path) -> tuple[dict, dict]:
    """dfr.json and the export record embedded in an exported model's metadata."""
    props = session.get_modelmeta().custom_metadata_map
    meta = manifest_io.embedded(props, path)
    if meta is None:
        raise manifest_io.ManifestError(path, "carries no dfr.json metadata",
                                        "use a model made by dfr-export (other ONNX files do not say how to threshold)")
    try:
        export_info = json.loads(props.get(EXPORT_INFO_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise manifest_io.ManifestError(path, f"its {EXPORT_INFO_KEY} metadata is not valid JSON ({exc})",
                                        manifest_io.EMBEDDED_REMEDY) from None
    return meta, export_info
