"""Screening without training: every slim target of every unit set, cut out of a model in one shot, predicted in
every runtime by the cost table; and the smallest target of each (units, runtime) that the budget allows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.planner.measure import meets, predicted_mb
from compress_sweeps.planner.table import CostTable

log = logging.getLogger(__name__)


@dataclass
class Shape:
    """One screened point: a unit set at a target, the slim model it cuts, and its predictions per runtime."""

    units: tuple[str, ...]
    target: float
    model: nn.Module = field(repr=False)
    predicted: dict[str, dict[str, float]]  # runtime -> {latency_ratio, latency_ms, size_mb}

    @property
    def label(self) -> str:
        return f"{'+'.join(self.units)}@{self.target:g}" if self.units else "unslimmed"

    def row(self) -> dict[str, Any]:
        return {"units": list(self.units), "target": self.target, "predicted": self.predicted}


def screen(
    model: nn.Module,
    context: RunContext,
    pruner_for: Callable[[Sequence[str]], Any],
    unit_sets: Sequence[Sequence[str]],
    targets: Sequence[float],
    family: Any,
    table: CostTable,
    runtimes: Sequence[str],
    enough: Callable[[Shape], bool] | None = None,
    beyond: int = 0,
) -> tuple[list[Shape], dict[str, str]]:
    """The model itself (no slimming: `units` empty) and every reachable (unit set, target) of `model`, cut by the
    pruner `pruner_for(units)` builds (one attach and one calibration per unit set), with its predicted latency and
    size in each runtime; a target that cuts the same shape as a smaller one is left out. A unit set's targets stop
    `beyond` shapes after the first one `enough` accepts (deeper cuts only lose accuracy). Also {unit set: why it
    was skipped} for the sets this model cannot slim (the pruner's own attach says so)."""

    def shape(units: tuple[str, ...], target: float, slim: nn.Module) -> Shape:
        terms = family.terms(slim)
        predicted = {r: table.predict(family, terms, r) | {"size_mb": predicted_mb(slim, r)} for r in runtimes}
        return Shape(units, target, slim, predicted)

    shapes, skipped = [shape((), 0.0, model)], {}
    seen = {str(family.terms(model))}
    for units in unit_sets:
        accepted = 0
        try:
            for target, slim in pruner_for(units).slimmed_at(model, context, targets):
                if str(family.terms(slim)) in seen:
                    continue
                seen.add(str(family.terms(slim)))
                shapes.append(shape(tuple(units), target, slim))
                accepted += enough is not None and (accepted > 0 or enough(shapes[-1]))
                if accepted > beyond:
                    break
        except ConfigError as error:  # e.g. heads on a CNN: the pruner's attach refuses it
            skipped["+".join(units)] = str(error)
            log.info("plan: units %s skipped: %s", "+".join(units), error)
    return shapes, skipped


def smallest_within(
    shapes: Sequence[Shape], runtimes: Sequence[str], budget: Mapping[str, float], margin: float
) -> dict[tuple[tuple[str, ...], str], Shape]:
    """For each (unit set, runtime): the screened shape of the smallest target predicted within the budget less
    the margin (less slimming keeps more accuracy)."""
    chosen: dict[tuple[tuple[str, ...], str], Shape] = {}
    for shape in sorted(shapes, key=lambda s: s.target):
        for runtime in runtimes:
            key = (shape.units, runtime)
            if key not in chosen and meets(shape.predicted[runtime], budget, margin):
                chosen[key] = shape
    return chosen


def deeper_within(
    shape: Shape,
    runtime: str,
    measured: Mapping[str, float],
    shapes: Sequence[Shape],
    budget: Mapping[str, float],
    margin: float,
) -> Shape | None:
    """The first screened shape of `shape`'s unit set cut deeper than it that is within the budget less the margin
    once its predictions are scaled as `shape`'s were off: by `measured` (what `shape` delivered, re-timed) over
    what screening predicted for it in `runtime`."""
    screened = shape.predicted[runtime]
    drift = {k: measured[k] / v for k, v in screened.items() if v and measured.get(k)}
    for deeper in sorted(shapes, key=lambda s: s.target):
        if deeper.units == shape.units and deeper.target > shape.target:
            figures = {k: v * drift.get(k, 1.0) for k, v in deeper.predicted[runtime].items()}
            if meets(figures, budget, margin):
                return deeper
    return None


def fastest(shapes: Sequence[Shape], runtimes: Sequence[str]) -> tuple[Shape, str] | None:
    """The shape and runtime with the lowest predicted latency (what an impossible budget is told about)."""
    pairs = [(s, r) for s in shapes for r in runtimes]
    return min(pairs, key=lambda p: p[0].predicted[p[1]]["latency_ratio"], default=None)
