"""SparseGPT: one-shot pruning with layer-wise reconstruction (Frantar & Alistarh 2023, "SparseGPT: Massive
Language Models Can Be Accurately Pruned in One-Shot", arXiv:2301.00774).

For one layer with weight W (out x in) and calibration inputs X, SparseGPT looks for a pruned W' with a small
reconstruction error ||W X - W' X||^2. With H = 2 X^T X (+ damping) it goes through the input columns left to
right (Optimal Brain Surgeon, one column at a time, with the Cholesky factor of H^-1 giving every row the same
sequence of inverse Hessians): the pruned weights of a column are set to zero and the error this makes is spread
over the columns not yet processed, so the kept weights compensate. Columns are handled in blocks of `block_size`
whose updates to the later columns are applied in one matrix product (lazy batch updates). The mask is chosen
adaptively at the start of every block by w^2 / [H^-1]_jj^2 (N:M: at the start of every run of M columns, among
the current, already updated weights). Input features that never fire (diag(H) = 0) get weight 0 and H_jj = 1,
as in the reference implementation. `pruner/method=sparsegpt`, its keys under `pruner.method.`.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from compress_sweeps.pruners.oneshot.calibration import Hessian
from compress_sweeps.pruners.oneshot.method import Goal
from compress_sweeps.schema import check_arguments
from compress_sweeps.weights.patterns import Pattern, as_matrix


def inverse_hessian_factor(hessian: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper Cholesky factor of (H + damping * mean(diag H) * I)^-1, booleans of the dead input features)."""
    h = hessian.float().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    h.diagonal().add_(damping * h.diagonal().mean())
    try:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
        return torch.linalg.cholesky(inverse, upper=True), dead
    except torch.linalg.LinAlgError as error:
        raise RuntimeError(
            f"SparseGPT: the layer Hessian is not positive definite even with damping {damping} ({error}); "
            "raise pruner.method.damping or pruner.calibration_examples"
        ) from error


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    goal: Goal,
    damping: float = 0.01,
    block_size: int = 128,
    first: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned and updated `(out, in)` weight in float32, pruned booleans) for `hessian` = 2 X^T X; `first` marks
    weights pruned before any other (the starting model's zeros)."""
    w = weight.float().clone()
    first = torch.zeros_like(w, dtype=torch.bool) if first is None else first
    factor, dead = inverse_hessian_factor(hessian, damping)
    w[:, dead] = 0.0
    columns = w.shape[1]
    pruned = torch.zeros_like(w, dtype=torch.bool)
    # a pattern that fixes the sparsity of every run of columns (N:M) chooses each run's mask when the run starts,
    # among the weights updated so far; any other chooses a block's mask at the block's start
    run = goal.pattern.span if goal.pattern.fixed_sparsity is not None else 0
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = w[:, start:end].clone()  # updated in place as the columns before it are pruned
        errors = torch.zeros_like(block)
        inverse = factor[start:end, start:end]
        diagonal = inverse.diagonal()
        chosen_first = first[:, start:end]
        if run:
            mask = torch.zeros_like(block, dtype=torch.bool)
        else:
            scores = (block.square() / diagonal.square()).masked_fill(chosen_first, -torch.inf)
            mask = goal.lowest(scores)
        scale = mask / diagonal  # error of column i: its pruned weights / [H^-1]_ii
        for i in range(end - start):
            if run and i % run == 0:
                scores = block[:, i : i + run].square() / diagonal[i : i + run].square()
                scores = scores.masked_fill(chosen_first[:, i : i + run], -torch.inf)
                mask[:, i : i + run] = goal.lowest(scores)
                scale[:, i : i + run] = mask[:, i : i + run] / diagonal[i : i + run]
            torch.mul(block[:, i], scale[:, i], out=errors[:, i])
            # OBS update of the columns not yet done; column i itself keeps its kept weights (its error is 0
            # there), and its pruned ones are zeroed below
            block[:, i:].addr_(errors[:, i], inverse[i, i:], alpha=-1.0)
        w[:, start:end] = block.masked_fill(mask, 0.0)
        pruned[:, start:end] = mask
        w[:, end:] -= errors @ factor[start:end, end:]  # the block's updates to every later column at once
    return w, pruned


class SparseGPT:
    """Prune each layer by OBS reconstruction on its calibration Hessian (`damping`, `block_size` as in the paper)."""

    name = "sparsegpt"
    needs_data = True

    def __init__(
        self,
        damping: Annotated[float, Field(ge=0, lt=1)] = 0.01,
        block_size: Annotated[int, Field(ge=1)] = 128,
    ) -> None:
        check_arguments(SparseGPT, {"damping": damping, "block_size": block_size}, "pruner.method.")
        self.damping, self.block_size = damping, block_size

    def problem(self, pattern: Pattern) -> str | None:
        if pattern.span is None:
            return "sparsegpt selects weights within blocks of input columns, so it cannot remove whole rows"
        if self.block_size % pattern.span:  # a run of M columns (or a block) must never straddle two column blocks
            span = pattern.span
            return f"pruner.method.block_size={self.block_size} must be a multiple of the pattern's {span} columns"
        return None

    def new_statistic(self, module: nn.Module) -> Hessian:
        return Hessian(as_matrix(module.weight).shape[1], module.weight.device)

    def prune(
        self, weight: torch.Tensor, statistic: Hessian, goal: Goal, first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pruned and updated weight, pruned booleans) of an `(out, in)` weight matrix; `first` pruned first."""
        return sparsegpt_prune(weight, statistic.matrix, goal, self.damping, self.block_size, first)
