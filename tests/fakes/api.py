"""The real TensorRT Python API surfaces (../shared/api dumps, gzipped copies kept here) and signature parsing."""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

API_DIR = Path(__file__).parent / "api"
VERSIONS = ("10.3.0", "10.16.1.11", "11.4.0.106")


@lru_cache(maxsize=None)
def load_api(version: str) -> dict:
    with gzip.open(API_DIR / f"tensorrt-{version}.json.gz", "rt") as f:
        return json.load(f)


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside brackets ([], (), <>)."""
    parts, depth, current = [], 0, []
    for i, ch in enumerate(text):
        if ch in "[(<":
            depth += 1
        elif ch in "])" or (ch == ">" and text[i - 1] != "-"):
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current))
    return parts


def parse_params(signature: str) -> list[tuple[str, bool]]:
    """[(name, has_default)] of a pybind11 signature, without `self`."""
    start = signature.index("(") + 1
    end = signature.rfind(") ->")
    end = end if end != -1 else signature.rfind(")")
    params = []
    for part in _split_top(signature[start:end]):
        name = part.split(":")[0].split("=")[0].strip()
        if name and name not in ("self", "this"):
            params.append((name, "=" in part))
    return params


def accepts(signatures: list[str], args: tuple, kwargs: dict) -> bool:
    """True if some overload takes these positional and keyword arguments."""
    for signature in signatures:
        params = parse_params(signature)
        if len(args) > len(params):
            continue
        rest = params[len(args):]
        names = {name for name, _ in rest}
        if any(k not in names for k in kwargs):
            continue
        if all(name in kwargs for name, has_default in rest if not has_default):
            return True
    return False
