"""Sparsity patterns, parsed once: which weights are pruned together, how a layer's scores become per-group scores,
and whether a tensor's zeros follow the pattern (`holds`, counted from the tensor alone).

Pruners, `measure` and `verify` all go through `parse_pattern`; nothing else reads a pattern string, and nothing
asks a pattern what it is: each one answers what the pruners need (`fixed_sparsity`, `span`, `row_groups`,
`lowest`, `keeps_holding_with_more_zeros`), so a new pattern is one class here.

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
from dataclasses import dataclass

import torch

from compress_sweeps.errors import ConfigError

REDUCTIONS = ("mean", "sum", "max")


def as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """The 2-D `(out, in)` view every pattern works on (Conv2d kernels flattened into the input columns)."""
    return tensor.reshape(tensor.shape[0], -1) if tensor.ndim > 1 else tensor.reshape(1, -1)


def lowest(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Booleans marking the round(fraction * n) lowest entries of each row of a 2-D `scores`; ties go by position
    (a stable sort), so a selection is deterministic."""
    count = round(fraction * scores.shape[1])
    order = scores.argsort(dim=1, stable=True)[:, :count]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, True)


def resolve_sparsity(pattern: Pattern, requested: float | None, default: float, key: str) -> float:
    """The sparsity a pruner aims at: the pattern's own when it fixes one (N:M: 1 - N/M; a different `requested`
    is an error naming `key`), else `requested`, or `default` when that is None."""
    fixed = pattern.fixed_sparsity
    if fixed is None:
        return default if requested is None else float(requested)
    if requested is not None and abs(requested - fixed) > 1e-9:
        pattern_key = key.removesuffix("target_sparsity") + "pattern"
        raise ConfigError(
            key,
            requested,
            f"must be null or {fixed:g}: {pattern_key}={pattern.label} prunes exactly {fixed:g} of a layer",
            problem=f"contradicts {pattern_key}={pattern.label}",
        )
    return fixed


def reduce_blocks(blocks: torch.Tensor, dims: tuple[int, ...], how: str) -> torch.Tensor:
    if how == "mean":
        return blocks.mean(dim=dims)
    if how == "sum":
        return blocks.sum(dim=dims)
    return blocks.amax(dim=dims)


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


@dataclass(frozen=True)
class NMPattern:
    """At most `n` non-zeros in every `m` consecutive input weights of a row (`N:M`, e.g. 2:4)."""

    n: int
    m: int

    @property
    def label(self) -> str:
        return f"{self.n}:{self.m}"

    keeps_holding_with_more_zeros = True  # "at most N non-zeros" stays true with more zeros

    @property
    def max_fraction(self) -> float:
        return 1.0 - self.n / self.m

    @property
    def fixed_sparsity(self) -> float:
        """A fully pruned layer ends at exactly 1 - N/M."""
        return self.max_fraction

    @property
    def span(self) -> int:
        """A run of M input columns: the mask is chosen within each."""
        return self.m

    def row_groups(self, columns: int) -> int:
        """Groups are single weights."""
        return columns

    def problem(self, shape: tuple[int, int]) -> str | None:
        if shape[1] % self.m:
            return f"{shape[1]} input columns are not divisible by M={self.m} of the {self.label} pattern"
        return None

    def group_size(self, shape: tuple[int, int]) -> int:
        return 1

    def group_scores(self, scores: torch.Tensor, reduce: str) -> torch.Tensor:
        """Element scores, with the N highest of every run of M set to +inf so they are never pruned."""
        runs = scores.reshape(-1, self.m)
        keep = runs.topk(self.n, dim=1).indices
        return runs.scatter(1, keep, float("inf")).flatten()

    def lowest(self, scores: torch.Tensor, sparsity: float, per_row: bool = False, reduce: str = "sum") -> torch.Tensor:
        """The `(out, in)` booleans of the M - N lowest of every run of M (`sparsity`, `per_row` and `reduce` do not
        change a choice made within each run)."""
        out, inp = scores.shape
        return lowest(scores.reshape(-1, self.m), self.max_fraction).reshape(out, inp)

    def expand(self, pruned: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        return (~pruned).reshape(shape).float()

    def masked_group_scores(self, scores: torch.Tensor, mask: torch.Tensor, reduce: str) -> torch.Tensor:
        """Pruned weights score -inf before the N highest of each run are kept, so a run counts its pruned
        weights first."""
        return self.group_scores(scores.masked_fill(mask == 0, float("-inf")), reduce)

    def write_mask(self, mask: torch.Tensor, pruned: torch.Tensor) -> None:
        mask.copy_((~pruned).reshape(mask.shape).to(mask.dtype))

    def describe(self) -> str:
        return f"at most {self.n} non-zeros in every {self.m} consecutive input weights of a row"

    @torch.no_grad()
    def holds(self, weight: torch.Tensor) -> bool:
        """Every run of M consecutive input weights of a row holds at most N non-zeros."""
        matrix = as_matrix(weight)
        out, inp = matrix.shape
        return inp % self.m == 0 and bool(((matrix != 0).reshape(out, inp // self.m, self.m).sum(-1) <= self.n).all())


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
