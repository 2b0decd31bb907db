"""Wanda: pruning by weights and activations (Sun, Liu, Bair & Kolter 2023, "A Simple and Effective Pruning
Approach for Large Language Models", arXiv:2306.11695).

The score of weight W_ij is |W_ij| * ||X_j||_2, the L2 norm of input feature j over all calibration tokens, and
weights are compared within each output row (the paper's per-output comparison group): every row loses the same
share of its weights, N:M within each run of M of a row. Block patterns generalise the group to a row of blocks.
No weight is updated: Wanda only chooses the mask. `pruner/method=wanda`.
"""

from __future__ import annotations

import torch
from torch import nn

from compress_sweeps.pruners.oneshot.calibration import FeatureNorms
from compress_sweeps.pruners.oneshot.method import Goal, row_problem
from compress_sweeps.weights.patterns import Pattern, as_matrix


def wanda_scores(weight: torch.Tensor, feature_norms: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2 for an `(out, in)` weight and the `in` input-feature norms."""
    return weight.abs() * feature_norms.reshape(1, -1).to(weight)


class Wanda:
    """Prune the lowest |W| * ||X|| of each output row (N:M: of each run of M)."""

    name = "wanda"
    needs_data = True

    def problem(self, pattern: Pattern) -> str | None:
        return row_problem(self.name, pattern)

    def new_statistic(self, module: nn.Module) -> FeatureNorms:
        return FeatureNorms(as_matrix(module.weight).shape[1], module.weight.device)

    def prune(
        self, weight: torch.Tensor, statistic: FeatureNorms, goal: Goal, first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pruned weight, pruned booleans) of an `(out, in)` weight matrix; `first` marks weights pruned first."""
        scores = wanda_scores(weight, statistic.norms()).masked_fill(first, -torch.inf)
        pruned = goal.lowest(scores, per_row=True)
        return weight.masked_fill(pruned, 0.0), pruned
