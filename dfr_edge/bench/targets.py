"""The matrix's rows: every artefact x backend x thread count, loaded once, plus the torch baseline.

A bundle directory stands for every exported variant in it (and for its torch-eager baseline); a
single .onnx file stands for itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dfr_edge.bench.baseline import TorchBaseline, torch_available
from dfr_edge.runtime import Detector
from dfr_edge.runtime.camera.engine_choice import BackendChoice, load_with
from dfr_edge.runtime.triton.client import is_triton_url
from dfr_edge.threads import default_threads

VARIANT_ORDER = ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8-cpu.onnx")


@dataclass
class Target:
    label: str  # unique in the run, e.g. "int8-cpu onnxruntime:cpu"
    artefact: str  # the file (or bundle, for the baseline) it was loaded from
    variant: str  # fp32, fp16, int8-tensorrt, int8-cpu, torch-eager
    backend: str  # onnxruntime:cpu, torch:eager, ...
    threads: int  # inference threads it ran with
    detector: Detector
    baseline: bool = False


def artefacts(models: Sequence[Path | str]) -> tuple[list[Path | str], list[Path]]:
    """(files to measure, bundles given); a bundle contributes all its .onnx files, known ones first
    (engines are built per machine: give a .engine file itself)."""
    files, bundles = [], []
    for given in models:
        model = Path(given)
        if is_triton_url(given):  # a served model: measured like a file, through the network
            files.append(given)
        elif model.is_dir():
            found = sorted(model.glob("*.onnx"), key=lambda p: (VARIANT_ORDER + (p.name,)).index(p.name))
            if not found:
                raise FileNotFoundError(f"bundle {model} holds no exported .onnx file: run dfr-export {model} first")
            files.extend(found)
            bundles.append(model)
        elif model.is_file():
            files.append(model)
        else:
            raise FileNotFoundError(f"model {model} does not exist (give .onnx files or bundle directories)")
    return files, bundles


def build_targets(models: Sequence[Path], backends: Sequence[BackendChoice], threads: Sequence[int | None],
                  baseline: bool = True, max_batch: int = 16) -> list[Target]:
    files, bundles = artefacts(models)
    targets = []
    for asked in threads:
        count = asked or default_threads()  # resolved once: every target of this count runs with the same
        suffix = f" t{count}" if len(threads) > 1 else ""
        for file in files:
            # an .onnx file runs on every ONNX Runtime provider asked for; a TensorRT .engine or a
            # triton:// URL has one engine, chosen by load_backend
            onnx = not is_triton_url(file) and Path(file).suffix == ".onnx"
            engine_file = not onnx and not is_triton_url(file)
            for choice in backends if onnx else backends[:1]:
                gpu_timing = {"time_gpu": True} if engine_file else {}  # CUDA events (TensorRT)
                detector = load_with(choice, file, threads=count, max_batch=max_batch, **gpu_timing)
                variant = detector.backend.export_info.get("variant", Path(file).stem)
                engine = choice.label if onnx else detector.backend.name
                label = f"{variant if len(bundles) <= 1 else file} {engine}{suffix}"
                targets.append(Target(label, str(file), variant, engine, count, detector))
        if baseline and bundles and torch_available():
            for bundle in bundles:
                label = f"torch-eager{suffix}" if len(bundles) == 1 else f"{bundle} torch-eager{suffix}"
                targets.append(Target(label, str(bundle), "torch-eager", "torch:eager", count,
                                      Detector(TorchBaseline(bundle, count, max_batch)), baseline=True))
    labels = [t.label for t in targets]
    if len(set(labels)) != len(labels):
        raise ValueError("the same model was given twice")
    return targets
