"""`hydra/sweeper=reference`: Hydra's grid sweeper plus one reference job, so every comparison has its reference.

The sweeper class lives in `hydra_plugins/compress_sweeps_reference/` (Hydra loads sweepers only from the
`hydra_plugins` namespace); what it adds is here.

A sweep over compression settings (sparsity targets, patterns, KD temperatures) says how much each setting costs
only next to the same task, model and training length *without* that compression. `reference: [pruner=none]`
adds that job once, shared by the whole grid instead of repeated per point: the first grid point, with every
override of the named groups (`pruner`, `pruner.*`, `pruner/criterion`, `model@pruner...`) replaced by the
reference's own. When the grid already holds that point it is not added twice. The report then shows each row's
drop against it (and, for KD rows, the fraction of the gap to the teacher that the KD term closed).
"""

from __future__ import annotations

from collections.abc import Sequence


def touches(override: str, group: str) -> bool:
    """Whether `override` (`pruner.target_sparsity=0.5`, `+pruner.groups=...`, `model@distiller.x=cnn`) sets
    something of config group `group`."""
    key = override.split("=", 1)[0].lstrip("+~")
    package = key.split("@", 1)[1] if "@" in key else key
    return any(part == group or part.startswith((f"{group}.", f"{group}/")) for part in (key, package))


def reference_point(point: Sequence[str], reference: Sequence[str]) -> list[str]:
    """`point` without what the reference replaces, plus the reference's overrides."""
    groups = [entry.split("=", 1)[0] for entry in reference]
    kept = [override for override in point if not any(touches(override, group) for group in groups)]
    return [*kept, *reference]
