"""What a one-shot pruning method is to `OneShotPruner`: the `OneShotMethod` protocol, and the `Goal` it prunes to.

A method is chosen as its own config (`conf/pruner/method/<name>.yaml`, a `_target_` naming its class) with its own
keys (SparseGPT's damping and block size live in its YAML, under `pruner.method.`); the pruner selects the layers,
draws the calibration sample, runs the layers in order, hands each layer's weight and statistic to the method, and
keeps the masks locked afterwards. So a new one-shot method is one class (this protocol), its YAML and a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from compress_sweeps.weights.patterns import Pattern


@dataclass(frozen=True)
class Goal:
    """Prune `sparsity` of a layer's weights in `pattern`, a block (or row) scored by the `reduce` of its
    elements' scores (`sum` | `mean` | `max`)."""

    pattern: Pattern
    sparsity: float
    reduce: str = "sum"

    def lowest(self, scores: torch.Tensor, per_row: bool = False) -> torch.Tensor:
        """The `(out, in)` booleans (True = pruned) of the lowest `scores` under the goal: over the whole matrix, or
        within every output row (of blocks) when `per_row`."""
        return self.pattern.lowest(scores.float(), self.sparsity, per_row, self.reduce)


def row_problem(name: str, pattern: Pattern) -> str | None:
    """Why a method that compares the weights within an output row (Wanda, RIA) cannot prune in `pattern`: a
    pattern whose group is a whole row (channel) leaves nothing to compare."""
    if pattern.span is None:
        return f"{name} compares the weights within an output row, so it cannot remove whole rows (channel)"
    return None


@runtime_checkable
class OneShotMethod(Protocol):
    """A one-shot pruning method: how it scores (and possibly updates) one layer's weights."""

    name: str  # for logs and the spec: `wanda`
    needs_data: bool  # False: no calibration pass (`new_statistic` is never called)

    def problem(self, pattern: Pattern) -> str | None:
        """Why this method cannot prune in `pattern` (said before anything loads), or None."""
        ...

    def new_statistic(self, module: nn.Module) -> Any:
        """An empty statistic of a layer's inputs with `add(rows)`, filled by the calibration pass (calibration.py)."""
        ...

    def prune(
        self, weight: torch.Tensor, statistic: Any, goal: Goal, first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pruned, possibly updated `(out, in)` weight, its pruned booleans); `first` marks weights to prune
        before any other (the starting model's zeros)."""
        ...
