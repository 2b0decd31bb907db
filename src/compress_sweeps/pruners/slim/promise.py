"""What a slim run promises about weights it leaves in place: with `slim: false` the pruned units stay as zeros,
and each weight one unit group slices alone holds them as whole blocks of its `(out, in)` matrix (a pattern of
weights/patterns/, so `measure` and `verify` check it like any pruner's)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch

from compress_sweeps.pruners.slim.units import Slice, UnitGroup


def zero_unit_patterns(groups: Sequence[UnitGroup]) -> dict[str, str]:
    """{weight name -> block pattern} of the Linear/Conv weights one unit group slices alone (a weight sliced along
    both dimensions, by two groups, has no single pattern): a removed unit's positions are whole blocks of the
    weight's (out, in) matrix, e.g. `32x384` for a head's query rows, `384x1` for an FFN neuron's output column."""
    owners = Counter(s.name for g in groups for s in g.slices if s.scored)
    return {s.name: label for g in groups for s in g.slices if owners[s.name] == 1 and (label := block_label(s))}


def block_label(s: Slice) -> str | None:
    """`s`'s unit positions as an NxM block of the weight's (out, in) matrix, when they are consecutive runs."""
    shape = tuple(s.param.shape)
    width = s.index.shape[1]
    runs = s.index - s.index[:, :1]
    if not bool((runs == torch.arange(width)).all()) or bool((s.index[:, 0] % width).any()):
        return None
    kernel = math.prod(shape[2:])  # columns of the (out, in) matrix per input channel: 1 for a Linear
    if s.dim == 0:
        return f"{width}x{shape[1] * kernel}"
    return f"{shape[0]}x{width * kernel}"
