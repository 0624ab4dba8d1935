"""What a benchmark ran on, recorded beside its numbers: CPU, GPU and driver, engines, threads, power mode."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
from typing import Any

from dfr_edge.report import machine_info
from dfr_edge.threads import usable_cores

ENGINE_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "tensorrt", "torch", "tritonclient", "numpy", "opencv-python",
                   "opencv-python-headless")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _command(args: list[str]) -> str | None:
    """First line of a tool's answer, or None where the tool is absent or fails."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in ENGINE_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def environment() -> dict[str, Any]:
    gpus = _command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    return {
        **machine_info(),
        "usable_cores": usable_cores(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpus": gpus.splitlines() if gpus else [],
        "packages": package_versions(),
        "thread_variables": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "jetson_power_mode": _command(["nvpmodel", "-q"]),
    }
