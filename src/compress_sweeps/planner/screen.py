"""Screening without training: every slim target of every unit set, cut out of a model in one shot, predicted in
every runtime by the cost table; the smallest target of each (units, runtime) that the budget allows; and the
decision saved in the sweep folder, so that a re-launch makes the same jobs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.planner.measure import meets, predicted_mb
from compress_sweeps.planner.table import CostTable
from compress_sweeps.run.artifacts import write_json_atomic

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


Decision = dict[tuple[tuple[str, ...], str], Shape]  # (unit set, runtime) -> the shape sent to training


def guarded(
    chosen: Decision,
    shapes: Sequence[Shape],
    timed: Callable[[dict[str, tuple[nn.Module, str]]], dict[str, dict[str, float]]],
    budget: Mapping[str, float],
    tries: int,
) -> tuple[Decision, list[dict]]:
    """The chosen shapes timed whole in their runtimes before training (`timed`: {name: (model, runtime)} -> their
    figures against the dense model, all in one interleaved set); one over budget makes way for the next target of
    its unit set (in the next set, up to `tries` sets), one still over budget is dropped. Returns the kept choice
    and every check (shape, runtime, predicted and timed figures)."""
    by_units: dict[tuple[str, ...], list[Shape]] = {}
    for shape in shapes:
        by_units.setdefault(shape.units, []).append(shape)
    queues = {key: [s for s in by_units[key[0]] if s.target >= shape.target][:tries] for key, shape in chosen.items()}
    kept, checks = {}, []
    for attempt in range(tries):
        trying = {key: queue[attempt] for key, queue in queues.items() if key not in kept and attempt < len(queue)}
        if not trying:
            break
        figures_of = timed({f"{i}": (shape.model, key[1]) for i, (key, shape) in enumerate(trying.items())})
        for i, ((units, runtime), shape) in enumerate(trying.items()):
            figures = figures_of[f"{i}"] | {"size_mb": shape.predicted[runtime]["size_mb"]}
            checks.append(
                {"shape": shape.label, "runtime": runtime, "predicted": shape.predicted[runtime], "timed": figures}
            )
            if meets(figures, budget):
                kept[(units, runtime)] = shape
    return {key: kept[key] for key in chosen if key in kept}, checks


def save_decision(path: Path, settings: Mapping, dense: str, chosen: Decision, guard: Sequence[dict]) -> None:
    """The candidates a plan chose, with the plan's settings, its dense run folder and the guard's timings."""
    rows = [{"units": list(u), "runtime": r, "target": s.target} for (u, r), s in chosen.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"settings": dict(settings), "dense": dense, "candidates": rows, "guard": list(guard)})


def load_decision(
    path: Path, settings: Mapping, dense: str, shapes: Sequence[Shape]
) -> tuple[Decision, list[dict]] | None:
    """The candidates (and guard timings) an earlier launch of the same plan into the same sweep folder chose: the
    whole-model timings that decide them vary a little between launches, and a re-launch must make the same jobs to
    skip them. None when there is none, or it was of other settings, another dense run or other shapes."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if saved.get("settings") != dict(settings) or saved.get("dense") != dense:
        return None
    by_key = {(s.units, s.target): s for s in shapes}
    chosen = {}
    for row in saved["candidates"]:
        shape = by_key.get((tuple(row["units"]), row["target"]))
        if shape is None:
            return None
        chosen[(shape.units, row["runtime"])] = shape
    return chosen, saved.get("guard", [])
