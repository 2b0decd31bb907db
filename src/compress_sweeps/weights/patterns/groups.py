"""What every pattern shares: the `(out, in)` matrix view, the lowest-scores selection, the block reductions and
the sparsity a pattern allows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from compress_sweeps.errors import ConfigError

if TYPE_CHECKING:
    from compress_sweeps.weights.patterns import Pattern

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
