"""Which parts of the graph must stay float for INT8 to keep the maps: one-at-a-time sensitivity, then greedy.

A unit is one backbone block (node-name prefix /extractor/backbone/blocks.N/ for EfficientNet-Lite0, the
first indexed module for other backbones) or the whole CAE. Sensitivity of a unit: the fidelity
(`fidelity.Fidelity.map_shift`) of a graph where only that unit is int8. Selection: if full INT8 is beyond
the budget, keep units float in decreasing sensitivity until the budget is met, so the fewest float units
that this order can give. The scoring function is passed in, so the search is independent of how a
trial is quantized and measured (and testable without quantizing anything).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import onnx

from dfr_edge.export.fidelity import Fidelity, FidelityBudget, Reference, measure
from dfr_edge.export.int8 import Int8Flavour, Int8Source, quantize_int8

log = logging.getLogger(__name__)

BACKBONE_PREFIX = "/extractor/backbone/"
CAE_PREFIX = "/cae/"
CAE_UNIT = "cae"
_INDEXED = re.compile(r".*\d$")

Score = Callable[[tuple[str, ...]], Fidelity]  # float units -> fidelity of that mixed-precision graph


def unit_of(node_name: str) -> str | None:
    """The unit a node belongs to: 'blocks.3' (a backbone block), 'cae', or None (not searched)."""
    if node_name.startswith(CAE_PREFIX):
        return CAE_UNIT
    if not node_name.startswith(BACKBONE_PREFIX):
        return None
    parts = node_name[len(BACKBONE_PREFIX) :].split("/")[:-1]  # the last part is the op's own name
    for i, part in enumerate(parts):
        if _INDEXED.match(part):
            return "/".join(parts[: i + 1])
    return parts[0] if parts else None


def quantizable_units(model: onnx.ModelProto, op_types: Iterable[str], float_prefixes: tuple[str, ...]) -> \
        dict[str, list[str]]:
    """Unit -> its quantizable node names, in graph order; nodes that always stay float are left out."""
    op_types = set(op_types)
    units: dict[str, list[str]] = {}
    for node in model.graph.node:
        unit = unit_of(node.name)
        if unit is not None and node.op_type in op_types and not node.name.startswith(float_prefixes):
            units.setdefault(unit, []).append(node.name)
    return units


@dataclass
class Trial:
    float_units: tuple[str, ...]
    fidelity: Fidelity

    def to_dict(self) -> dict:
        return {"float_units": list(self.float_units), **self.fidelity.to_dict()}


@dataclass
class MixedPrecision:
    """The chosen float units and the evidence: each unit's sensitivity, every trial, the budget."""

    float_units: tuple[str, ...]
    fidelity: Fidelity
    budget: FidelityBudget
    sensitivity: dict[str, float] = field(default_factory=dict)  # unit -> map shift when only it is int8
    trials: list[Trial] = field(default_factory=list)

    @property
    def within_budget(self) -> bool:
        return self.fidelity.within(self.budget)

    def to_dict(self) -> dict:
        return {"float_units": list(self.float_units), "budget": vars(self.budget),
                "fidelity": self.fidelity.to_dict(), "within_budget": self.within_budget,
                "sensitivity_map_shift": self.sensitivity, "trials": [t.to_dict() for t in self.trials]}


def sensitivities(units: Iterable[str], score: Score) -> dict[str, float]:
    """Map shift of a graph in which only `unit` is int8, for every unit, most sensitive first."""
    units = list(units)
    shifts = {u: score(tuple(v for v in units if v != u)).map_shift for u in units}
    return dict(sorted(shifts.items(), key=lambda item: -item[1]))


def choose_float_units(units: Iterable[str], score: Score, budget: FidelityBudget) -> MixedPrecision:
    """Full INT8 if it is within the budget; otherwise add float units, most sensitive first, until it is.

    Never returns a graph beyond the budget silently: if even every unit float misses it, the result says
    so (within_budget False) and the caller refuses.
    """
    units = list(units)
    first = score(())
    trials = [Trial((), first)]
    if first.within(budget):
        return MixedPrecision((), first, budget, trials=trials)
    ranking = sensitivities(units, score)
    chosen: list[str] = []
    current = first
    for unit in ranking:
        chosen.append(unit)
        current = score(tuple(chosen))
        trials.append(Trial(tuple(chosen), current))
        if current.within(budget):
            break
    return MixedPrecision(tuple(chosen), current, budget, ranking, trials)


def parse_float_request(text: str) -> str | tuple[str, ...]:
    """--float-blocks: 'auto' (search), 'none' (full INT8) or a comma-separated list of units."""
    text = text.strip()
    if text in ("auto", "none"):
        return text
    units = tuple(u.strip() for u in text.split(",") if u.strip())
    if not units:
        raise ValueError("--float-blocks takes 'auto', 'none' or a comma-separated list such as blocks.3,cae")
    return units


@dataclass
class MixedInt8:
    choice: MixedPrecision
    needed: tuple[str, ...] | None  # when beyond budget: the float units the search would need (None: no set does)
    models: dict[tuple[str, ...], onnx.ModelProto]  # every graph tried, by its float units

    @property
    def model(self) -> onnx.ModelProto:
        return self.models[self.choice.float_units]


def mixed_int8(source: Int8Source, flavour: Int8Flavour, method: str, ref: Reference, budget: FidelityBudget,
               request: str | tuple[str, ...] = "auto") -> MixedInt8:
    """Quantize `flavour` with the requested float units ('auto': the search above) and measure it."""
    units = quantizable_units(source.graph, flavour.quantized_ops, flavour.float_prefixes)
    models: dict[tuple[str, ...], onnx.ModelProto] = {}
    scored: dict[frozenset[str], tuple[onnx.ModelProto, Fidelity]] = {}  # a float set is quantized once

    def score(float_units: tuple[str, ...]) -> Fidelity:
        key = frozenset(float_units)
        if key not in scored:
            nodes = tuple(n for u in float_units for n in units[u])
            model = quantize_int8(source, flavour, method, nodes)
            scored[key] = model, measure(ref, model)
            log.info("int8-%s, float %s: map shift %.3f, score shift %.3f", flavour.name,
                     ",".join(float_units) or "-", scored[key][1].map_shift, scored[key][1].score_shift)
        models[float_units], fidelity = scored[key]
        return fidelity

    if request == "auto":
        choice = choose_float_units(units, score, budget)
    else:
        fixed = () if request == "none" else tuple(request)
        unknown = [u for u in fixed if u not in units]
        if unknown:
            raise ValueError(f"--float-blocks: unknown {', '.join(unknown)}; this graph has {', '.join(units)}")
        fidelity = score(fixed)
        choice = MixedPrecision(fixed, fidelity, budget, trials=[Trial(fixed, fidelity)])
    needed = None
    if not choice.within_budget:
        search = choice if request == "auto" else choose_float_units(units, score, budget)
        needed = search.float_units if search.within_budget else None
    return MixedInt8(choice, needed, models)
