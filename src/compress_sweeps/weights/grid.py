"""Quantization grids read off the weights themselves: how many levels a group of values holds, whether they lie on
a uniform grid, and which int8 grid a folded weight already lies on (so an int8 export can store its codes exactly).

A *level group* is the unit a quantizer gives its own scale: the whole tensor (`None`), each output row (`"row"`),
or buckets of `n` consecutive values (an int). `group_rows` is the one place that cuts a tensor into them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

CODE_LIMITS = (127, 63, 31, 15, 7, 3, 1)  # symmetric grids of 8, 7, ... 2 bits all fit int8 codes exactly


def exact_grid(
    weight: torch.Tensor, per_channel: bool, tol: float = 1e-3, code_limits: Sequence[int] = CODE_LIMITS
) -> torch.Tensor | None:
    """The scale(s) under which `weight` is integer codes in [-127, 127], or None if it is on no such grid."""
    rows = weight.detach().float().reshape(weight.shape[0], -1)
    amax = rows.abs().amax(dim=1, keepdim=True) if per_channel else rows.abs().amax().reshape(1, 1)
    amax = torch.where(amax > 0, amax, torch.ones_like(amax))
    for codes in code_limits:
        scale = amax / codes
        scaled = rows / scale
        if float((scaled - scaled.round()).abs().max()) < tol:
            return scale.reshape(-1)
    return None


def group_rows(weight: torch.Tensor, group: int | str | None) -> torch.Tensor:
    """`weight` as rows of one group each: whole tensor, output channel, or buckets of consecutive values."""
    flat = weight.detach().reshape(-1)
    if group is None:
        return flat.reshape(1, -1)
    if group == "row":
        return flat.reshape(weight.shape[0], -1)
    pad = (-flat.numel()) % group
    flat = torch.cat([flat, flat[-1:].expand(pad)]) if pad else flat  # repeats a value: adds no level
    return flat.reshape(-1, group)


def grid_levels(rows: torch.Tensor, tol: float = 1e-2) -> tuple[int, int | None]:
    """Most distinct values in any row, and most grid points any row needs if every row's nonzero values lie on
    a uniform grid (min + k * step; None if some row does not).

    The grid step is the smallest gap between distinct values, or a 2..8-th of it when codes are skipped.
    Exact zeros (pruned weights) are allowed off the grid: a row holding them spends one more level on them.
    """
    nonzero = rows != 0
    has_zero = (~nonzero).any(dim=1).long()
    anchor = rows.gather(1, rows.abs().argmax(dim=1, keepdim=True))  # a value each row has, used in place of zeros
    values = torch.where(nonzero, rows, anchor).sort(dim=1).values
    gaps = values.diff(dim=1)
    distinct = gaps > 0
    levels = int((distinct.sum(dim=1) + 1 + has_zero).amax())
    min_gap = torch.where(distinct, gaps, torch.full_like(gaps, float("inf"))).amin(dim=1, keepdim=True)
    span = values[:, -1] - values[:, 0]
    grid = torch.zeros_like(has_zero)
    unresolved = torch.ones_like(has_zero, dtype=torch.bool)
    for divisor in range(1, 9):
        step = min_gap / divisor
        ratio = gaps / step
        fits = torch.where(distinct, (ratio - ratio.round()).abs() <= tol, True).all(dim=1) & unresolved
        points = torch.where(span > 0, span / step.squeeze(1), torch.zeros_like(span)).round().long() + 1
        grid = torch.where(fits, points, grid)
        unresolved &= ~fits
    return levels, None if bool(unresolved.any()) else int((grid + has_zero).amax())


def max_levels(weight: torch.Tensor, group: int | str | None) -> int:
    """Most distinct non-zero values in any level group of `weight`."""
    rows = group_rows(weight, group)
    return max(int(torch.unique(row[row != 0]).numel()) for row in rows)
