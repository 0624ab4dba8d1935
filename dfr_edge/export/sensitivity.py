"""Which parts of the graph must stay float for INT8 to keep the maps: one-at-a-time sensitivity, then greedy.

A unit is one backbone block (node-name prefix /extractor/backbone/blocks.N/ for EfficientNet-Lite0, the
first indexed module for other backbones) or the whole CAE. Sensitivity of a unit: the fidelity
(`fidelity.Fidelity.map_shift`) of a graph where only that unit is int8. Selection: if full INT8 is beyond
the budget, keep units float in decreasing sensitivity until the budget is met, so the fewest float units
that this order can give. The scoring function is passed in, so the search is independent of how a
trial is quantized and measured (and testable without quantizing anything). A flavour that allows more than one
weight precision (the CPU flavour: 8 and 7 bits) is searched at each, and the best search wins: within the
budget, then the fewest float units, then the smallest map shift. Which precision a dataset wants is measured,
not assumed: 7 bits kept full INT8 within the targets on bottle-dark20 and lost 0.16 PRO on bottle
(benchmarks/README.md, int8_fidelity.py).
"""

from __future__ import annotations

import dataclasses
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
    weight_bits: int = 8

    @property
    def within_budget(self) -> bool:
        return self.fidelity.within(self.budget)

    def preference(self) -> tuple[bool, int, float]:
        """Sort key, best first: within the budget, then the fewest float units, then the smallest map shift."""
        return not self.within_budget, len(self.float_units), self.fidelity.map_shift

    def to_dict(self) -> dict:
        return {"float_units": list(self.float_units), "weight_bits": self.weight_bits, "budget": vars(self.budget),
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
    models: dict[tuple[int, tuple[str, ...]], onnx.ModelProto]  # every graph tried, by weight bits and float units
    searches: list[MixedPrecision]  # one per weight precision tried, the choice among them

    @property
    def model(self) -> onnx.ModelProto:
        return self.models[self.choice.weight_bits, self.choice.float_units]


def best(searches: Iterable[MixedPrecision]) -> MixedPrecision:
    return min(searches, key=MixedPrecision.preference)


def mixed_int8(source: Int8Source, flavour: Int8Flavour, method: str, ref: Reference, budget: FidelityBudget,
               request: str | tuple[str, ...] = "auto") -> MixedInt8:
    """Quantize `flavour` with the requested float units ('auto': the search above) and measure it, at each of
    the flavour's weight precisions until one is within the budget with nothing more float than requested."""
    units = quantizable_units(source.graph, flavour.quantized_ops, flavour.float_prefixes)
    models: dict[tuple[int, tuple[str, ...]], onnx.ModelProto] = {}
    scored: dict[tuple[int, frozenset[str]], tuple[onnx.ModelProto, Fidelity]] = {}  # each graph quantized once
    fixed = () if request in ("auto", "none") else tuple(request)
    unknown = [u for u in fixed if u not in units]
    if unknown:
        raise ValueError(f"--float-blocks: unknown {', '.join(unknown)}; this graph has {', '.join(units)}")

    def scorer(bits: int) -> Score:
        def score(float_units: tuple[str, ...]) -> Fidelity:
            key = bits, frozenset(float_units)
            if key not in scored:
                nodes = tuple(n for u in float_units for n in units[u])
                model = quantize_int8(source, flavour, method, nodes, bits)
                scored[key] = model, measure(ref, model, flavour.exact_check)
                log.info("int8-%s, %d-bit weights, float %s: map shift %.3f, score shift %.3f", flavour.name, bits,
                         ",".join(float_units) or "-", scored[key][1].map_shift, scored[key][1].score_shift)
            models[bits, float_units], fidelity = scored[key]
            return fidelity

        return score

    def search(bits: int) -> MixedPrecision:
        return dataclasses.replace(choose_float_units(units, scorer(bits), budget), weight_bits=bits)

    def as_requested(bits: int) -> MixedPrecision:
        fidelity = scorer(bits)(fixed)
        return MixedPrecision(fixed, fidelity, budget, trials=[Trial(fixed, fidelity)], weight_bits=bits)

    searches: list[MixedPrecision] = []
    for bits in flavour.weight_bits:
        searches.append(search(bits) if request == "auto" else as_requested(bits))
        if searches[-1].within_budget and searches[-1].float_units == fixed:
            break  # nothing float beyond the request: the preferred (earlier) precision stands
    choice = best(searches)
    needed = None
    if not choice.within_budget:
        found = best(searches if request == "auto" else (search(bits) for bits in flavour.weight_bits))
        needed = found.float_units if found.within_budget else None
    return MixedInt8(choice, needed, models, searches)
