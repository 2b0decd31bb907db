"""`hydra/sweeper=reference`: Hydra's grid sweeper plus one reference job, so every comparison has its reference;
and, with `grids`, a union of grids, so one sweep holds rows that no single cartesian product can.

The sweeper class lives in `hydra_plugins/compress_sweeps_reference/` (Hydra loads sweepers only from the
`hydra_plugins` namespace); what it adds is here.

A sweep over compression settings (sparsity targets, patterns, KD temperatures) says how much each setting costs
only next to the same task, model and training length *without* that compression. `reference: [pruner=none]`
adds that job once, shared by the whole grid instead of repeated per point: the first grid point, with every
override of the named groups (`pruner`, `pruner.*`, `pruner/criterion`, `model@pruner...`) replaced by the
reference's own. When the grid already holds that point it is not added twice. The report then shows each row's
drop against it (and, for KD rows, the fraction of the gap to the teacher that the KD term closed).

`grids: [{key: values}, ...]` (as scikit-learn's list of parameter grids): each grid is a cartesian product of its
own keys with the sweep's `params`, and the sweep runs their union, each job once. One-shot pruners run at 0 and
at N training steps, snip_momentum only while training: `[{pruner: wanda,sparsegpt, trainer.max_steps: 0,100},
{pruner: snip_momentum}]` holds both without a nonsense "snip_momentum at 0 steps" point. A grid's key replaces the
same key of `params`; the command line replaces both, as it replaces `params` in Hydra's own sweeper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")  # an override: a parsed Hydra `Override` in the sweeper, a string in tests


def touches(override: str, group: str) -> bool:
    """Whether `override` (`pruner.target_sparsity=0.5`, `+pruner.groups=...`, `model@distiller.x=cnn`) sets
    something of config group `group`."""
    key = override.split("=", 1)[0].lstrip("+~")
    package = key.split("@", 1)[1] if "@" in key else key
    return any(part == group or part.startswith((f"{group}.", f"{group}/")) for part in (key, package))


def grid_union(
    params: Sequence[T],
    grids: Sequence[Sequence[T]],
    command_line: Sequence[T],
    product: Callable[[list[T]], list[list[str]]],
) -> list[list[str]]:
    """The jobs of every grid, each `product(overrides)` of `params`, the grid's own overrides and the command line
    (in that order, so a later one replaces an earlier one of the same key), in grid order, duplicates dropped.
    `product` is Hydra's grid expansion (the overrides are Hydra's parsed `Override`s in the sweeper)."""
    jobs: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for grid in grids or [[]]:
        for job in product([*params, *grid, *command_line]):
            if (key := tuple(sorted(job))) not in seen:
                seen.add(key)
                jobs.append(job)
    return jobs


def reference_point(point: Sequence[str], reference: Sequence[str]) -> list[str]:
    """`point` without what the reference replaces, plus the reference's overrides."""
    groups = [entry.split("=", 1)[0] for entry in reference]
    kept = [override for override in point if not any(touches(override, group) for group in groups)]
    return [*kept, *reference]
