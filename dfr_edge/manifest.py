"""`dfr.json`: the versioned description every artefact carries (contract 2 in ARCHITECTURE.md).

It sits in the bundle, is embedded in every ONNX file's metadata and sits beside every engine, so
any artefact can say what it is and how to threshold it. Torch-free: the runtime reads it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dfr_edge.atomic import atomic_path

SCHEMA = "dfr-edge/bundle"
SCHEMA_VERSION = 1
MANIFEST_NAME = "dfr.json"
ONNX_METADATA_KEY = "dfr.json"

# (dotted path, expected type(s)) that every valid manifest has.
REQUIRED: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("schema", str),
    ("schema_version", int),
    ("backbone.name", str),
    ("backbone.layers", list),
    ("backbone.weights.source", str),
    ("backbone.mean", list),
    ("backbone.std", list),
    ("input.height", int),
    ("input.width", int),
    ("input.dtype", str),
    ("input.color", str),
    ("input.layout", str),
    ("features.channels", int),
    ("cae.latent_dim", int),
    ("head.sigma", (int, float)),
    ("thresholds.pixel", (int, float)),
    ("thresholds.image", (int, float)),
    ("thresholds.pixel_fpr", (int, float)),
    ("thresholds.image_quantile", (int, float)),
    ("normal_stats.score_mean", (int, float)),
    ("training.count", int),
    ("training.hash", str),
    ("versions.dfr_edge", str),
    ("config", dict),
)


class ManifestError(ValueError):
    """dfr.json is missing, malformed, or from an incompatible version; the message says which."""


def _lookup(manifest: dict, dotted: str) -> Any:
    node: Any = manifest
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(dotted)
        node = node[key]
    return node


def validate(manifest: Any, source: str = "dfr.json") -> dict:
    """Check schema name, version and required fields; returns the manifest unchanged."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"{source}: expected a JSON object")
    if manifest.get("schema") != SCHEMA:
        raise ManifestError(f"{source}: not a dfr-edge manifest (schema {manifest.get('schema')!r})")
    version = manifest.get("schema_version")
    if not isinstance(version, int):
        raise ManifestError(f"{source}: schema_version missing or not an integer")
    if version > SCHEMA_VERSION:
        raise ManifestError(
            f"{source}: written by a newer dfr-edge (schema version {version}, this one reads up to "
            f"{SCHEMA_VERSION}); upgrade dfr-edge to use it"
        )
    problems = []
    for dotted, kind in REQUIRED:
        try:
            value = _lookup(manifest, dotted)
        except KeyError:
            problems.append(f"missing {dotted}")
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            problems.append(f"{dotted} has the wrong type ({type(value).__name__})")
    if problems:
        raise ManifestError(f"{source}: invalid manifest: " + "; ".join(problems))
    return manifest


def loads(text: str, source: str = "dfr.json") -> dict:
    try:
        return validate(json.loads(text), source)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{source}: not valid JSON ({exc})") from exc


def read(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path} does not exist: not a dfr-edge bundle (train one with dfr-train)")
    return loads(path.read_text(), str(path))


def dumps(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=False) + "\n"


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def update(path: Path, **sections: Any) -> dict:
    """Replace top-level sections of an existing manifest (e.g. metrics), atomically."""
    manifest = read(path)
    manifest.update(sections)
    write_text_atomic(path, dumps(validate(manifest, str(path))))
    return manifest
