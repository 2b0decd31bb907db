"""RIA: relative importance and activations (Zhang et al., ICLR 2024, "Plug-and-Play: An Efficient Post-training
Pruning Method for Large Language Models", arXiv:2404.14000).

The score of weight W_ij is its relative importance, |W_ij| / sum_k |W_ik| + |W_ij| / sum_k |W_kj| (its share of
its output row's and of its input column's total magnitude, so a weight in a small row or column is not pruned
only for being small in absolute terms), times ||X_j||_2 ** `power`, the L2 norm of input feature j over the
calibration tokens. Weights are compared within each output row, as in Wanda; no weight is updated.
`pruner/method=ria`.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from compress_sweeps.pruners.oneshot.calibration import FeatureNorms
from compress_sweeps.pruners.oneshot.method import Goal, row_problem
from compress_sweeps.schema import check_arguments
from compress_sweeps.weights.patterns import Pattern, as_matrix


def ria_scores(weight: torch.Tensor, feature_norms: torch.Tensor, power: float) -> torch.Tensor:
    """(|W| / row sums of |W| + |W| / column sums of |W|) * ||X_j|| ** power for an `(out, in)` weight."""
    magnitude = weight.abs()
    relative = magnitude / magnitude.sum(dim=1, keepdim=True) + magnitude / magnitude.sum(dim=0, keepdim=True)
    return relative.nan_to_num(0.0) * feature_norms.reshape(1, -1).to(weight).pow(power)


class RIA:
    """Prune the lowest relative importance x activation of each output row (N:M: of each run of M)."""

    name = "ria"
    needs_data = True

    def __init__(self, power: Annotated[float, Field(ge=0)] = 0.5) -> None:
        check_arguments(RIA, {"power": power}, "pruner.method.")
        self.power = power

    def problem(self, pattern: Pattern) -> str | None:
        return row_problem(self.name, pattern)

    def new_statistic(self, module: nn.Module) -> FeatureNorms:
        return FeatureNorms(as_matrix(module.weight).shape[1], module.weight.device)

    def prune(
        self, weight: torch.Tensor, statistic: FeatureNorms, goal: Goal, first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pruned weight, pruned booleans) of an `(out, in)` weight matrix; `first` marks weights pruned first."""
        scores = ria_scores(weight, statistic.norms(), self.power).masked_fill(first, -torch.inf)
        pruned = goal.lowest(scores, per_row=True)
        return weight.masked_fill(pruned, 0.0), pruned
