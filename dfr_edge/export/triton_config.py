"""config.pbtxt for a dfr-edge model on Triton (contract 5): I/O, batching, instances, dfr.json parameters.

Shared by the repository export (`dfr_edge.export.triton`) and dfr-serve's generated repository
(`dfr_edge.serve_repository`); imports nothing heavy, so the serving venv (no onnx, no torch) can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dfr_edge.runtime.triton.model import INPUT, MAP_OUTPUT, SCORE_OUTPUT, ServedModel, parameters

TRT_PRECISION = {"fp16": "FP16", "int8": "INT8"}
TRT_CACHE_ROOT = "/trt-cache"  # a volume in the container (see export/triton.md): engines survive restarts
KEEP_VERSIONS = 1  # Triton serves the newest version; older folders stay on disk for a rollback


@dataclass(frozen=True)
class RepositoryOptions:
    model: ServedModel
    kind: str = "gpu"  # instance_group kind: "gpu" or "cpu"
    trt_accelerator: str | None = None  # "fp16" / "int8": ONNX Runtime's TensorRT execution provider

    def __post_init__(self) -> None:
        if self.kind not in ("gpu", "cpu"):
            raise ValueError(f"--kind must be gpu or cpu, got {self.kind!r}")
        if self.trt_accelerator is not None:
            if self.trt_accelerator not in TRT_PRECISION:
                raise ValueError(f"--trt-accelerator must be one of {', '.join(TRT_PRECISION)}")
            if self.kind != "gpu":
                raise ValueError("--trt-accelerator needs --kind gpu (TensorRT runs on the GPU only)")


class Word(str):
    """An enum value or keyword, written bare in protobuf text format (TYPE_UINT8, KIND_GPU)."""


def to_pbtxt(message: dict, indent: str = "") -> str:
    """Protobuf text format for a dict of fields: dicts are messages, lists of dicts repeated messages."""
    lines = []
    for key, value in message.items():
        items = value if isinstance(value, list) and value and isinstance(value[0], dict) else [value]
        for item in items:
            if isinstance(item, dict):
                lines.append(f"{indent}{key} {{\n{to_pbtxt(item, indent + '  ')}{indent}}}")
            else:
                lines.append(f"{indent}{key}: {_scalar(item)}")
    return "".join(line + "\n" for line in lines)


def _scalar(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, Word):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def io_fields(model: ServedModel) -> dict:
    """Inputs and outputs as clients see them; the graph's per-image scalar score is served as [1]."""
    return {
        "input": [{"name": INPUT, "data_type": Word("TYPE_UINT8"), "format": Word("FORMAT_NONE"),
                   "dims": [model.height, model.width, 3]}],
        "output": [{"name": MAP_OUTPUT, "data_type": Word("TYPE_FP32"), "dims": [model.height, model.width]},
                   {"name": SCORE_OUTPUT, "data_type": Word("TYPE_FP32"), "dims": [1], "reshape": {"shape": []}}],
    }


def model_config(options: RepositoryOptions, manifest: dict, export_info: dict, *,
                 plan_files: dict[str, str] | None = None, backend: str = "onnxruntime") -> str:
    """config.pbtxt for the ONNX Runtime backend, or for tensorrt_plan when plan_files {cc: file} is given.

    dfr-serve passes backend="python": the same config, run by its Python-backend model (`dfr_edge.serve_model`).
    """
    model = options.model
    fields: dict = {"name": model.name + ("_trt" if plan_files else "")}
    if plan_files:
        fields["platform"] = "tensorrt_plan"
        fields["cc_model_filenames"] = [{"key": cc, "value": name} for cc, name in sorted(plan_files.items())]
    else:
        fields["backend"] = backend
    fields["max_batch_size"] = model.max_batch_size
    fields.update(io_fields(model))
    fields["version_policy"] = {"latest": {"num_versions": KEEP_VERSIONS}}
    fields["dynamic_batching"] = {"max_queue_delay_microseconds": model.queue_delay_us}
    kind = "gpu" if plan_files else options.kind
    fields["instance_group"] = [{"count": model.instances, "kind": Word(f"KIND_{kind.upper()}")}]
    if options.trt_accelerator and not plan_files:
        fields["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [
            {"name": "tensorrt", "parameters": _trt_parameters(options)}]}}
    fields["parameters"] = [{"key": k, "value": {"string_value": v}}
                            for k, v in parameters(manifest, export_info).items()]
    return to_pbtxt(fields)


def _trt_parameters(options: RepositoryOptions) -> list[dict]:
    model = options.model
    frame = f"{model.height}x{model.width}x3"
    cache = f"{TRT_CACHE_ROOT}/{model.name}"
    values = {
        "precision_mode": TRT_PRECISION[options.trt_accelerator],
        "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": cache,
        "trt_profile_min_shapes": f"{INPUT}:1x{frame}",
        "trt_profile_opt_shapes": f"{INPUT}:{model.max_batch_size}x{frame}",
        "trt_profile_max_shapes": f"{INPUT}:{model.max_batch_size}x{frame}",
    }
    return [{"key": k, "value": v} for k, v in values.items()]
