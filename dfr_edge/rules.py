"""Value rules shared by the training configuration and dfr.json.

dfr-train refuses a configuration that breaks one of them, and a hand-edited dfr.json is held to the
same rules, so a bundle cannot describe a model that dfr-train would not have made. A rule returns
None when the value is fine, else what is wrong with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Rule = Callable[[Any], "str | None"]

NUMBER = (int, float)


def is_number(value: Any) -> bool:
    return isinstance(value, NUMBER) and not isinstance(value, bool)


def kind_problem(value: Any, kinds: tuple[type, ...]) -> str | None:
    """Type check where a float field accepts an int, and a bool is not a number."""
    if value is None:
        return None if type(None) in kinds else "is missing a value"
    accepted = kinds + ((int,) if float in kinds else ())
    if isinstance(value, accepted) and (bool in kinds or not isinstance(value, bool)):
        return None
    names = " or ".join(k.__name__ for k in kinds if k is not type(None))
    return f"must be of type {names} (got {type(value).__name__} {value!r})"


def finite(value: Any) -> str | None:
    return None if is_number(value) and math.isfinite(value) else f"must be a finite number (got {value!r})"


def at_least(low: float, *, integer: bool = False) -> Rule:
    kind = "an integer" if integer else "a finite number"

    def rule(value: Any) -> str | None:
        ok = (isinstance(value, int) if integer else is_number(value)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and value >= low
        return None if ok else f"must be {kind} >= {low} (got {value!r})"

    return rule


def above(low: float) -> Rule:
    def rule(value: Any) -> str | None:
        ok = is_number(value) and math.isfinite(value) and value > low
        return None if ok else f"must be a finite number > {low} (got {value!r})"

    return rule


def between(low: float, high: float, *, low_included: bool = False, high_included: bool = False) -> Rule:
    interval = f"{'[' if low_included else '('}{low:g}, {high:g}{']' if high_included else ')'}"

    def rule(value: Any) -> str | None:
        ok = is_number(value) and (low <= value if low_included else low < value)
        ok = ok and (value <= high if high_included else value < high)
        return None if ok else f"must be in {interval} (got {value!r})"

    return rule


def one_of(*allowed: str) -> Rule:
    def rule(value: Any) -> str | None:
        return None if value in allowed else f"must be {' or '.join(map(repr, allowed))} (got {value!r})"

    return rule


def image_side(value: Any) -> str | None:
    """Every backbone here downsamples by at most 32 and needs even stride-2 inputs."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 32 and value % 32 == 0
    return None if ok else f"must be a multiple of 32, at least 32 (e.g. 256; got {value!r})"


def channel_values(value: Any) -> str | None:
    ok = isinstance(value, list) and len(value) == 3 and all(finite(v) is None for v in value)
    return None if ok else f"must be 3 finite numbers, one per colour channel (got {value!r})"


COUNT = at_least(1, integer=True)
SIGMA = at_least(0)
PIXEL_FPR = between(0, 1)
IMAGE_QUANTILE = between(0, 1, high_included=True)
PCA_EXPLAINED = between(0, 1)
VAL_FRACTION = between(0, 1, low_included=True)
