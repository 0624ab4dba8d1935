"""What a dfr-edge model looks like on a Triton server (contract 5), shared by export, server and client.

The repository export (`dfr_edge.export.triton`), dfr-serve (`dfr_edge.serve`) and the
client backend all read these names, so a client cannot tell a repository model from a dfr-serve one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from dfr_edge import manifest as manifest_io

INPUT = "image"
MAP_OUTPUT = "anomaly_map"
SCORE_OUTPUT = "score"
MANIFEST_PARAMETER = "dfr.json"  # the bundle's dfr.json, so a client thresholds like the local runtime
EXPORT_PARAMETER = "dfr.export"  # how the served file was made (variant, parity, calibration)
DEFAULT_NAME = "dfr"
DEFAULT_MAX_BATCH = 8
DEFAULT_QUEUE_DELAY_US = 2000  # long enough for concurrent cameras to meet in one batch, short next to inference
# dfr-serve's default: on CPU a lone request waits the whole delay and cores idle meanwhile; requests that
# arrive while the instances are busy still form batches (benchmarks/README.md, triton_serving.py).
SERVE_QUEUE_DELAY_US = 0
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class ServedModel:
    """One fused graph behind Triton: its name, frame size and batching."""

    name: str
    height: int
    width: int
    max_batch_size: int = DEFAULT_MAX_BATCH
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instances: int = 1

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"model name {self.name!r}: use letters, digits, '.', '_' or '-' only")
        if self.max_batch_size < 1:
            raise ValueError(f"max batch size must be at least 1, got {self.max_batch_size}")
        if self.instances < 1:
            raise ValueError(f"instance count must be at least 1, got {self.instances}")


def parameters(manifest: dict, export_info: dict) -> dict[str, str]:
    """The model config `parameters` that carry dfr.json and the export record as JSON strings."""
    compact = {"separators": (",", ":")}
    return {MANIFEST_PARAMETER: json.dumps(manifest_io.validate(manifest), **compact),
            EXPORT_PARAMETER: json.dumps(export_info, **compact)}
