"""One-shot magnitude pruning: |W| with one threshold per layer, no calibration data (`pruner/method=magnitude`).

The baseline the data-aware methods are measured against (Han et al. 2015's criterion, applied once): per layer,
like SparseGPT, so all three methods prune every layer to the same sparsity.
"""

from __future__ import annotations

import torch
from torch import nn

from compress_sweeps.pruners.oneshot.method import Goal
from compress_sweeps.weights.patterns import Pattern


class Magnitude:
    """Prune the lowest |W| of each layer (N:M: of each run of M; NxM/channel: by the block's reduced |W|)."""

    name = "magnitude"
    needs_data = False

    def problem(self, pattern: Pattern) -> str | None:
        return None

    def new_statistic(self, module: nn.Module) -> None:
        raise TypeError("magnitude pruning uses no calibration data")

    def prune(
        self, weight: torch.Tensor, statistic: object, goal: Goal, first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pruned weight, pruned booleans) of an `(out, in)` weight matrix; `first` marks weights pruned first."""
        pruned = goal.lowest(weight.abs().masked_fill(first, -torch.inf))
        return weight.masked_fill(pruned, 0.0), pruned
