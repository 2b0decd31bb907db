"""`N:M`: at most N non-zeros in every M consecutive input weights of a row (2:4, the sparse tensor cores' pattern)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress_sweeps.weights.patterns.groups import as_matrix, lowest


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
