"""`channel`: whole output rows (output channels / neurons)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress_sweeps.weights.patterns.groups import as_matrix, lowest, reduce_blocks


@dataclass(frozen=True)
class ChannelPattern:
    """Whole output rows: a pruned channel's weights are all zero."""

    label = "channel"
    max_fraction = 1.0
    fixed_sparsity = None
    span = None  # a group is a whole row: no comparison within a row
    keeps_holding_with_more_zeros = False

    def row_groups(self, columns: int) -> int:
        return 1  # the row is one group

    def problem(self, shape: tuple[int, int]) -> str | None:
        return None

    def lowest(self, scores: torch.Tensor, sparsity: float, per_row: bool = False, reduce: str = "sum") -> torch.Tensor:
        """The `(out, in)` booleans of the `sparsity` lowest-scoring rows, a row scored by the `reduce` of its
        elements; a row is one group, so there is no per-row comparison."""
        if per_row:
            raise ValueError("the channel pattern has no per-row comparison group")
        rows = lowest(reduce_blocks(scores, (1,), reduce).reshape(1, -1), sparsity).reshape(-1, 1)
        return rows.expand(scores.shape).clone()

    def group_size(self, shape: tuple[int, int]) -> int:
        return shape[1]

    def group_scores(self, scores: torch.Tensor, reduce: str) -> torch.Tensor:
        return reduce_blocks(scores, (1,), reduce)

    def expand(self, pruned: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        return (~pruned).float().unsqueeze(1).expand(shape).contiguous()

    def masked_group_scores(self, scores: torch.Tensor, mask: torch.Tensor, reduce: str) -> torch.Tensor:
        """`group_scores` with the pruned rows at -inf (one mask entry per row tells)."""
        return self.group_scores(scores, reduce).masked_fill_(mask[:, 0] == 0, float("-inf"))

    def write_mask(self, mask: torch.Tensor, pruned: torch.Tensor) -> None:
        mask.copy_((~pruned).to(mask.dtype).unsqueeze(1).expand_as(mask))

    def describe(self) -> str:
        return "whole output rows (channels / neurons)"

    @torch.no_grad()
    def zero_units(self, weight: torch.Tensor) -> tuple[int, int]:
        """(all-zero output rows, rows)."""
        zeros = (as_matrix(weight) == 0).all(dim=1)
        return int(zeros.sum()), zeros.numel()

    @torch.no_grad()
    def holds(self, weight: torch.Tensor) -> bool:
        """Every output row is all zero or free of zeros."""
        zeros = (as_matrix(weight) == 0).sum(dim=1)
        return bool(((zeros == 0) | (zeros == as_matrix(weight).shape[1])).all())
