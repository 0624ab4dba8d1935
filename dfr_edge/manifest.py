"""`dfr.json`: the versioned description every artefact carries (contract 2 in ARCHITECTURE.md).

It sits in the bundle, is embedded in every ONNX file's metadata and sits beside every engine, so
any artefact can say what it is and how to threshold it. Torch-free: the runtime reads it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from dfr_edge import rules
from dfr_edge.atomic import atomic_path
from dfr_edge.errors import UnusableFileError

if TYPE_CHECKING:
    import onnx

SCHEMA = "dfr-edge/bundle"
SCHEMA_VERSION = 1
MANIFEST_NAME = "dfr.json"
ONNX_METADATA_KEY = "dfr.json"
EMBEDDED_REMEDY = "export the model again with dfr-export"

class Field(NamedTuple):
    """One value every valid manifest has: where it sits, its type(s), and the rule it obeys."""

    path: str  # dotted, e.g. "input.height"
    kinds: tuple[type, ...]
    rule: rules.Rule | None = None


# Everything the runtime, evaluation and export read, held to the rules dfr-train applies (rules.py).
FIELDS: tuple[Field, ...] = (
    Field("schema", (str,)),
    Field("schema_version", (int,), rules.COUNT),
    Field("backbone.name", (str,)),
    Field("backbone.layers", (list,)),
    Field("backbone.weights.source", (str,)),
    Field("backbone.mean", (list,), rules.channel_values),
    Field("backbone.std", (list,), rules.channel_values),
    Field("input.height", (int,), rules.image_side),
    Field("input.width", (int,), rules.image_side),
    Field("input.dtype", (str,), rules.one_of("uint8")),
    Field("input.color", (str,), rules.one_of("BGR")),
    Field("input.layout", (str,), rules.one_of("NHWC")),
    Field("features.channels", (int,), rules.COUNT),
    Field("cae.latent_dim", (int,), rules.COUNT),
    Field("head.sigma", rules.NUMBER, rules.SIGMA),
    Field("thresholds.pixel", rules.NUMBER, rules.finite),
    Field("thresholds.image", rules.NUMBER, rules.finite),
    Field("thresholds.pixel_fpr", rules.NUMBER, rules.PIXEL_FPR),
    Field("thresholds.image_quantile", rules.NUMBER, rules.IMAGE_QUANTILE),
    Field("normal_stats.score_mean", rules.NUMBER, rules.finite),
    Field("normal_stats.pixel_median", rules.NUMBER, rules.finite),
    Field("training.data", (str,)),
    Field("training.count", (int,), rules.COUNT),
    Field("training.hash", (str,)),
    Field("versions.dfr_edge", (str,)),
    Field("config", (dict,)),
)

REMEDY = "restore the dfr.json that dfr-train wrote (or retrain with dfr-train and export again)"


class ManifestError(UnusableFileError):
    """dfr.json is missing, malformed, or from an incompatible version; the message says which."""

    def __init__(self, path: Path | str, problem: str, remedy: str = REMEDY) -> None:
        super().__init__(path, problem, remedy)


def _lookup(manifest: dict, dotted: str) -> Any:
    node: Any = manifest
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(dotted)
        node = node[key]
    return node


def problems(manifest: dict) -> list[str]:
    """What is missing or wrong in a manifest, one entry per field."""
    found = []
    for field in FIELDS:
        try:
            value = _lookup(manifest, field.path)
        except KeyError:
            found.append(f"missing {field.path}")
            continue
        problem = rules.kind_problem(value, field.kinds) or (field.rule(value) if field.rule else None)
        if problem:
            found.append(f"{field.path} {problem}")
    return found


def validate(manifest: Any, source: str = "dfr.json", remedy: str = REMEDY) -> dict:
    """Check schema name, version and every field; returns the manifest unchanged."""
    if not isinstance(manifest, dict):
        raise ManifestError(source, "expected a JSON object", remedy)
    if manifest.get("schema") != SCHEMA:
        raise ManifestError(source, f"not a dfr-edge manifest (schema {manifest.get('schema')!r})",
                            "point to a bundle made by dfr-train or a model made by dfr-export")
    version = manifest.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise ManifestError(source, f"written by a newer dfr-edge (schema version {version}, this one reads up to "
                            f"{SCHEMA_VERSION})", "upgrade dfr-edge to use it")
    found = problems(manifest)
    if found:
        raise ManifestError(source, "invalid manifest: " + "; ".join(found), remedy)
    return manifest


def loads(text: str, source: str = "dfr.json", remedy: str = REMEDY) -> dict:
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(source, f"not valid JSON ({exc})", remedy) from None
    return validate(manifest, source, remedy)


def read(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist: not a dfr-edge bundle"
        raise ManifestError(path, problem, "train one with dfr-train")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ManifestError(path, "not a text file") from None
    return loads(text, str(path))


def embedded(metadata: Mapping[str, str], source: Path | str) -> dict | None:
    """The dfr.json in an exported ONNX file's metadata (key -> value), validated; None if it has none."""
    text = metadata.get(ONNX_METADATA_KEY)
    return None if text is None else loads(text, f"{source} metadata", EMBEDDED_REMEDY)


def from_onnx(model: onnx.ModelProto, source: Path | str) -> dict | None:
    """The dfr.json embedded in a loaded ONNX model, validated; None if it has none."""
    return embedded({p.key: p.value for p in model.metadata_props}, source)


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
