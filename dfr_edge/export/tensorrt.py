"""dfr-export --engine: compile a bundle's ONNX variant into a TensorRT engine on this machine.

Precision comes from the graph (model.onnx, model.fp16.onnx, model.int8.onnx) and the network is
built strongly typed: the one mode that exists unchanged in TensorRT 10.3 (JetPack 6.1/6.2),
10.x and 11.x (ARCHITECTURE.md "Where precision lives"). Flags are chosen by what the installed
module has (`hasattr`), never by enum values, which TensorRT 11 renumbered. The only weakly typed
build is DLA on TensorRT 10.x, whose documented path is FP16 + GPU fallback (see build_mode).
Order: TensorRT lint of the ONNX, parse (errors name their nodes), profile batch 1..N, workspace
limit, the bundle's timing cache, build, then engine + sidecar + timing cache written atomically.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from dfr_edge import manifest as manifest_io
from dfr_edge.digest import sha256_file
from dfr_edge.export.engine_cache import (
    engines_dir,
    timing_cache_path,
    trtexec_command,
    write_bytes_atomic,
    write_sidecar,
)
from dfr_edge.export.trt_lint import check_for_tensorrt
from dfr_edge.runtime.cuda import CudaApi, load_cuda
from dfr_edge.runtime.tensorrt import import_tensorrt
from dfr_edge.runtime.tensorrt.engine_info import EngineKey, sidecar_path

log = logging.getLogger(__name__)
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
PRECISIONS = (*VARIANT_FILES, "best")
LAST_10X_WITH_DLA = (10, 7)
FIRST_11X_WITH_DLA = (11, 4, 1)


@dataclass
class EngineOptions:
    precision: str = "fp16"  # fp32 | fp16 | int8 | best (int8 if model.int8.onnx exists, else fp16)
    max_batch: int = 8
    opt_batch: int | None = None  # default: max_batch
    workspace_mib: int = 1024
    opt_level: int | None = None  # builder_optimization_level 0..5; None: TensorRT's default (3)
    dla_core: int | None = None
    version_compatible: bool = False
    force: bool = False

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.max_batch < 1:
            raise ValueError("--max-batch must be at least 1")
        if self.opt_batch is not None and not 1 <= self.opt_batch <= self.max_batch:
            raise ValueError(f"--opt-batch must lie in 1..--max-batch ({self.max_batch})")
        if self.workspace_mib < 1:
            raise ValueError("--workspace must be at least 1 MiB")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise ValueError("--opt-level must lie in 0..5")
        if self.dla_core is not None and self.dla_core < 0:
            raise ValueError("--dla-core must be 0 or more")


@dataclass(frozen=True)
class BuildMode:
    strongly_typed: bool
    builder_flags: tuple[str, ...]  # BuilderFlag member names
    parser_flags: tuple[str, ...] = ()  # OnnxParserFlag member names


@dataclass
class BuiltEngine:
    path: Path
    key: EngineKey
    cached: bool  # an identical engine was already there: nothing was built
    trtexec: str
    sidecar: dict


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def build_mode(trt, precision: str, dla_core: int | None, version_compatible: bool) -> BuildMode:
    """Typing and flags for this TensorRT, from what the module has; refuses impossible requests."""
    version = trt.__version__
    if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        raise RuntimeError(f"TensorRT {version} has no strongly typed networks (JetPack 6.0 ships 8.6): upgrade to "
                           f"JetPack 6.1+ (TensorRT 10.3) or TensorRT 10/11")
    flags = ("VERSION_COMPATIBLE",) if version_compatible else ()
    if dla_core is None:
        return BuildMode(True, flags)
    if precision == "fp32":
        raise ValueError("DLA runs FP16 and INT8 only: build --precision fp16 for --dla-core, or drop --dla-core")
    if version_compatible:
        raise ValueError("--version-compatible is for data-centre fleets; a DLA engine is built on the Jetson that "
                         "runs it: drop one of the two options")
    if hasattr(trt.BuilderFlag, "FP16"):  # TensorRT 10.x: weak typing still exists
        if version_tuple(version)[:2] > LAST_10X_WITH_DLA:
            raise RuntimeError(f"TensorRT {version} has no DLA (10.7 was the last 10.x release with it; JetPack "
                               f"6.1/6.2 ship 10.3): build on the Jetson's own TensorRT, or drop --dla-core")
        if precision == "int8":
            raise ValueError(f"INT8 on DLA with TensorRT {version} needs implicit calibration (deprecated, not "
                             "offered here); explicit Q/DQ INT8 on DLA is unverified on 10.x: use --precision fp16 "
                             "for DLA, or INT8 on the GPU")
        # NVIDIA's documented DLA build for 10.x (trtexec --useDLACore=N --fp16 --allowGPUFallback).
        return BuildMode(False, ("FP16", "GPU_FALLBACK"))
    if version_tuple(version) < FIRST_11X_WITH_DLA:
        raise RuntimeError(f"TensorRT {version} has no DLA on Jetson: DLA returned in 11.4.1 for Jetson AGX Orin on "
                           f"JetPack 7.2.2+ (strongly typed); on JetPack 6 use its TensorRT 10.3")
    parser_flags = ("ADJUST_FOR_DLA",) if hasattr(trt.OnnxParserFlag, "ADJUST_FOR_DLA") else ()
    return BuildMode(True, ("GPU_FALLBACK",), parser_flags)


def profile_shapes(input_shape: tuple[int, ...], options: EngineOptions) -> list[tuple[int, ...]]:
    """(min, opt, max) for the dynamic batch; DLA has no dynamic dimensions, so all three are max."""
    rest = tuple(int(d) for d in input_shape[1:])
    if any(d < 1 for d in rest):
        raise ValueError(f"the ONNX input has dynamic dimensions besides the batch: {input_shape}; re-export it")
    if options.dla_core is not None:
        return [(options.max_batch, *rest)] * 3
    opt = options.opt_batch or options.max_batch
    return [(1, *rest), (opt, *rest), (options.max_batch, *rest)]


def resolve_precision(bundle: Path, precision: str) -> str:
    if precision != "best":
        return precision
    return "int8" if (bundle / VARIANT_FILES["int8"]).is_file() else "fp16"


def ensure_variant(bundle: Path, precision: str) -> Path:
    """The ONNX variant for `precision`; exported first (by the normal pipeline) if it is missing.

    dfr-export writes only the variants a bundle lacks, so files already there are never rewritten.
    """
    target = bundle / VARIANT_FILES[precision]
    if target.is_file():
        return target
    from dfr_edge.bundle import load_bundle
    from dfr_edge.export.pipeline import ExportOptions, export_bundle

    log.info("%s is missing: exporting it first", target.name)
    export_bundle(load_bundle(bundle), ExportOptions(fp16=precision == "fp16", int8=precision == "int8"))
    return target


def parse_errors(parser) -> str:
    """Every parser error with the node it is about (index, name, operator)."""
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        lines.append(f"  node {error.node()} {error.node_name()!r} ({error.node_operator()}): {error.desc()}")
    return "\n".join(lines)


def _same_build(sidecar: Path, build: dict) -> bool:
    try:
        old = json.loads(sidecar.read_text()).get("build", {})
    except (OSError, ValueError):
        return False
    return all(old.get(k) == build[k] for k in ("opt_batch", "workspace_mib", "opt_level", "shapes", "flags"))


def build_engine(bundle: Path, options: EngineOptions, cuda: CudaApi | None = None) -> BuiltEngine:
    """Build (or reuse) the engine for `options` on this machine's GPU; returns where it is."""
    options.check()
    bundle = Path(bundle)
    manifest = manifest_io.read(bundle / manifest_io.MANIFEST_NAME)
    trt = import_tensorrt()
    cuda = cuda if cuda is not None else load_cuda()
    device = cuda.device_info()
    precision = resolve_precision(bundle, options.precision)
    mode = build_mode(trt, precision, options.dla_core, options.version_compatible)
    onnx_path = ensure_variant(bundle, precision)
    model = onnx.load(onnx_path)
    check_for_tensorrt(model)  # the TensorRT lint first: clear findings before any parse
    manifest = manifest_io.from_onnx(model, str(onnx_path)) or manifest  # an INT8 graph's own thresholds

    key = EngineKey(trt.__version__, device.name, f"{device.compute_capability[0]}.{device.compute_capability[1]}",
                    precision, options.max_batch, options.dla_core, sha256_file(onnx_path), options.version_compatible)
    engine_path = engines_dir(bundle) / key.filename()
    engines_dir(bundle).mkdir(exist_ok=True)
    cache_path = timing_cache_path(bundle, trt.__version__, device)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if options.dla_core is not None and options.dla_core >= builder.num_DLA_cores:
        raise ValueError(f"--dla-core {options.dla_core}: {device.name} has {builder.num_DLA_cores} DLA core(s) "
                         f"(Orin Nano and discrete GPUs have none, Orin NX has 1, AGX Orin 2)")
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if mode.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    for name in mode.parser_flags:
        parser.set_flag(getattr(trt.OnnxParserFlag, name))
    if not parser.parse(onnx_path.read_bytes()):
        raise ValueError(f"TensorRT {trt.__version__} could not parse {onnx_path.name}:\n{parse_errors(parser)}")
    image = network.get_input(0)
    shapes = profile_shapes(tuple(image.shape), options)
    build = {"precision": precision, "onnx": onnx_path.name, "strongly_typed": mode.strongly_typed,
             "flags": list(mode.builder_flags), "parser_flags": list(mode.parser_flags),
             "input": image.name, "shapes": [list(s) for s in shapes], "opt_batch": shapes[1][0],
             "workspace_mib": options.workspace_mib, "opt_level": options.opt_level}
    trtexec = trtexec_command(onnx_path, engine_path, cache_path, image.name, shapes, options.workspace_mib,
                              options.opt_level, mode.strongly_typed and version_tuple(trt.__version__)[0] < 11,
                              mode.builder_flags, options.dla_core)
    if engine_path.exists() and not options.force:
        if _same_build(sidecar_path(engine_path), build):
            log.info("reusing %s (same TensorRT, GPU, precision, shapes and ONNX)", engine_path.name)
            return BuiltEngine(engine_path, key, True, trtexec, {})
        raise FileExistsError(f"{engine_path} exists with other build options; pass --force to rebuild it")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.opt_level is not None:
        config.builder_optimization_level = options.opt_level
    for name in mode.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
    profile = builder.create_optimization_profile()
    profile.set_shape(image.name, *shapes)
    config.add_optimization_profile(profile)
    old_cache = cache_path.read_bytes() if cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(old_cache), ignore_mismatch=False)

    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT {trt.__version__} failed to build {onnx_path.name} (see its log above)")
    build["build_seconds"] = round(time.perf_counter() - start, 2)
    build["timing_cache"] = {"file": cache_path.name, "loaded_bytes": len(old_cache), "reused": bool(old_cache)}
    build["tensorrt_lint"] = "passed"
    build["trtexec"] = trtexec
    write_bytes_atomic(engine_path, plan)
    write_bytes_atomic(cache_path, config.get_timing_cache().serialize())
    sidecar = write_sidecar(engine_path, key, manifest, build, device, bundle)
    return BuiltEngine(engine_path, key, False, trtexec, sidecar)
