"""`--backend ENGINE[:PROVIDER]` as given to dfr-camera and dfr-bench, turned into load_detector options.

One place maps command-line backend names onto the runtime's loaders, so both commands accept the
same names and a new engine is added here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfr_edge.runtime import Detector, load_detector
from dfr_edge.runtime.backend import pick_model
from dfr_edge.runtime.triton.client import is_triton_url
from dfr_edge.threads import default_threads

ENGINES = {"onnxruntime": ("cpu", "cuda", "tensorrt")}  # engine -> its providers, default first
ALIASES = {"ort": "onnxruntime"}


@dataclass(frozen=True)
class BackendChoice:
    engine: str
    provider: str

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.provider}"


def parse_backend(text: str, provider: str | None = None) -> BackendChoice:
    """"onnxruntime", "onnxruntime:cuda" or "ort:tensorrt"; `provider` fills in a bare engine name."""
    engine, _, given = text.partition(":")
    engine = ALIASES.get(engine, engine)
    if engine not in ENGINES:
        raise ValueError(f"unknown backend {text!r}; this runtime has: "
                         + ", ".join(f"{e}[:{'|'.join(p)}]" for e, p in ENGINES.items()))
    chosen = given or provider or ENGINES[engine][0]
    if chosen not in ENGINES[engine]:
        raise ValueError(f"backend {engine} has no provider {chosen!r}; choose one of {', '.join(ENGINES[engine])}")
    return BackendChoice(engine, chosen)


def load_with(choice: BackendChoice, model: Path | str, *, threads: int | None = None, max_batch: int = 8,
              **detector_options: Any) -> Detector:
    """A detector over `model` (a bundle folder: its best exported file for the provider, as dfr-infer
    does; lean, no torch; a triton:// URL: the server's model) on the chosen engine; thresholds etc. go
    to load_detector. `threads` None: the cores not busy right now (dfr_edge.threads)."""
    if not is_triton_url(model) and Path(model).is_dir():
        model = pick_model(Path(model), choice.provider)
    return load_detector(model, provider=choice.provider, max_batch=max_batch,
                         threads=threads or default_threads(), **detector_options)
