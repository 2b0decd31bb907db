"""`NxM`: blocks of N output rows by M input columns (`1x1` unstructured)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress_sweeps.weights.patterns.groups import as_matrix, lowest, reduce_blocks


@dataclass(frozen=True)
class BlockPattern:
    """Blocks of `rows` consecutive output rows x `cols` consecutive input columns (`NxM`)."""

    rows: int
    cols: int

    @property
    def label(self) -> str:
        return f"{self.rows}x{self.cols}"

    max_fraction = 1.0  # every block may be pruned
    fixed_sparsity = None  # any target
    keeps_holding_with_more_zeros = False  # a stray zero in a kept block breaks the pattern

    @property
    def span(self) -> int:
        """Consecutive input columns one group spans."""
        return self.cols

    def row_groups(self, columns: int) -> int:
        """Groups in `columns` consecutive input columns of one band of rows."""
        return columns // self.cols

    def problem(self, shape: tuple[int, int]) -> str | None:
        """Why a `(out, in)` matrix cannot take this pattern, or None when it can."""
        if shape[0] % self.rows or shape[1] % self.cols:
            return f"shape {tuple(shape)} is not divisible by the {self.label} block"
        return None

    def group_size(self, shape: tuple[int, int]) -> int:
        return self.rows * self.cols

    def group_scores(self, scores: torch.Tensor, reduce: str) -> torch.Tensor:
        """One score per block, flattened row-major over the block grid."""
        out, inp = scores.shape
        blocks = scores.reshape(out // self.rows, self.rows, inp // self.cols, self.cols)
        return reduce_blocks(blocks, (1, 3), reduce).flatten()

    def lowest(self, scores: torch.Tensor, sparsity: float, per_row: bool = False, reduce: str = "sum") -> torch.Tensor:
        """The `(out, in)` booleans (True = pruned) of the `sparsity` lowest-scoring blocks, a block scored by the
        `reduce` of its elements: over the whole matrix, or within every row of blocks (`per_row`)."""
        out, inp = scores.shape
        if self.rows == self.cols == 1:  # unstructured: every weight is its own group
            return lowest(scores, sparsity) if per_row else lowest(scores.reshape(1, -1), sparsity).reshape(out, inp)
        blocks = scores.reshape(out // self.rows, self.rows, inp // self.cols, self.cols)
        grid = reduce_blocks(blocks, (1, 3), reduce)
        chosen = lowest(grid, sparsity) if per_row else lowest(grid.reshape(1, -1), sparsity).reshape(grid.shape)
        return chosen.repeat_interleave(self.rows, 0).repeat_interleave(self.cols, 1)

    def expand(self, pruned: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """The `(out, in)` keep-mask (1.0 kept, 0.0 pruned) of a flat bool vector of pruned blocks."""
        grid = (~pruned).reshape(shape[0] // self.rows, shape[1] // self.cols).float()
        return grid.repeat_interleave(self.rows, 0).repeat_interleave(self.cols, 1)

    def masked_group_scores(self, scores: torch.Tensor, mask: torch.Tensor, reduce: str) -> torch.Tensor:
        """`group_scores` with the pruned blocks at -inf; a mask prunes whole blocks, so one entry per block tells
        (cheaper than masking every score first)."""
        grouped = self.group_scores(scores, reduce)
        return grouped.masked_fill_(mask[:: self.rows, :: self.cols].flatten() == 0, float("-inf"))

    def write_mask(self, mask: torch.Tensor, pruned: torch.Tensor) -> None:
        """Set the `(out, in)` keep-mask from a flat bool vector of pruned blocks: one broadcast copy."""
        out, inp = mask.shape
        grid = (~pruned).to(mask.dtype).view(out // self.rows, 1, inp // self.cols, 1)
        mask.view(grid.shape[0], self.rows, grid.shape[2], self.cols).copy_(grid.expand(-1, self.rows, -1, self.cols))

    def describe(self) -> str:
        if (self.rows, self.cols) == (1, 1):
            return "unstructured (1x1)"
        return f"blocks of {self.rows} output rows x {self.cols} input columns"

    @torch.no_grad()
    def zero_units(self, weight: torch.Tensor) -> tuple[int, int]:
        """(all-zero blocks, blocks) of `weight`; (0, 1) when the shape does not divide into blocks."""
        matrix = as_matrix(weight)
        out, inp = matrix.shape
        if self.problem((out, inp)):
            return 0, 1
        zeros = (matrix == 0).reshape(out // self.rows, self.rows, inp // self.cols, self.cols).all(dim=3).all(dim=1)
        return int(zeros.sum()), zeros.numel()

    @torch.no_grad()
    def holds(self, weight: torch.Tensor) -> bool:
        """Every block is all zero or free of zeros (and the shape divides into blocks)."""
        matrix = as_matrix(weight)
        out, inp = matrix.shape
        if self.problem((out, inp)):
            return False
        zeros = (matrix == 0).reshape(out // self.rows, self.rows, inp // self.cols, self.cols).sum(dim=(1, 3))
        return bool(((zeros == 0) | (zeros == self.rows * self.cols)).all())
