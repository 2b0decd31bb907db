"""Sparsity patterns, parsed once: which weights are pruned together, how a layer's scores become per-group scores,
and whether a tensor's zeros follow the pattern (`holds`, counted from the tensor alone).

Pruners, `measure` and `verify` all go through `parse_pattern`; nothing else reads a pattern string, and nothing
asks a pattern what it is: each one answers what the pruners need (`fixed_sparsity`, `span`, `row_groups`,
`lowest`, `keeps_holding_with_more_zeros`), so a new pattern is one class in a module of its own here, added
to `Pattern` and `parse_pattern`.

Every pattern sees a weight as a 2-D matrix `(out, in)`: a Linear weight as is, a Conv2d weight flattened to
`(out_channels, in_channels * kh * kw)`. A pattern cuts that matrix into equal-sized *groups*; masks prune whole
groups, and the group score is the reduction (`mean` by default) of its elements' scores.

- `NxM` (`BlockPattern`): blocks of N output rows by M input columns; `1x1` is unstructured, `4x1` takes four
  consecutive output rows of one input column, `1x4` four consecutive input columns of one output row.
- `N:M` (`NMPattern`): in every run of M consecutive input weights of a row at most N stay non-zero, so a fully
  pruned layer ends at sparsity exactly 1 - N/M. Groups are single weights; only the M - N lowest-scoring weights
  of each run are candidates, which is what makes the pattern hold at any intermediate target as well.
- `channel` (`ChannelPattern`): whole output rows (output channels / neurons).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from compress_sweeps.errors import ConfigError
from compress_sweeps.weights.patterns.block import BlockPattern
from compress_sweeps.weights.patterns.channel import ChannelPattern
from compress_sweeps.weights.patterns.groups import REDUCTIONS, as_matrix, lowest, reduce_blocks, resolve_sparsity
from compress_sweeps.weights.patterns.nm import NMPattern

if TYPE_CHECKING:
    import torch

__all__ = [
    "REDUCTIONS",
    "BlockPattern",
    "ChannelPattern",
    "NMPattern",
    "Pattern",
    "as_matrix",
    "lowest",
    "parse_pattern",
    "pattern_holds",
    "reduce_blocks",
    "resolve_sparsity",
]

Pattern = BlockPattern | ChannelPattern | NMPattern


def parse_pattern(text: str, key: str = "pruner.pattern") -> Pattern:
    """`"4x1"` -> BlockPattern(4, 1), `"2:4"` -> NMPattern(2, 4), `"channel"` -> ChannelPattern()."""
    text = str(text).strip().lower()
    if text == "channel":
        return ChannelPattern()
    if match := re.fullmatch(r"(\d+)x(\d+)", text):
        rows, cols = int(match[1]), int(match[2])
        if rows >= 1 and cols >= 1:
            return BlockPattern(rows, cols)
    if match := re.fullmatch(r"(\d+):(\d+)", text):
        n, m = int(match[1]), int(match[2])
        if 1 <= n < m:
            return NMPattern(n, m)
    raise ConfigError(
        key,
        text,
        "must be NxM blocks with N, M >= 1 (1x1 unstructured, 4x1, 1x4, 2x2, ...), N:M with 1 <= N < M "
        "(2:4, 1:4, 4:8, ...), channel, or head (attention heads)",
        problem="is not a pattern",
    )


def pattern_holds(weight: torch.Tensor, label: str) -> bool:
    """Whether the zeros of `weight` follow the pattern named `label` (e.g. `4x1`, `2:4`, `channel`)."""
    return parse_pattern(label).holds(weight)
