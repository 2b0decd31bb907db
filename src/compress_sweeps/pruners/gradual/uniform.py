"""Uniform pruning (`prune_domain: uniform`): the same sparsity in every block of every row of a layer.

Intel's Model Compression Research Package calls it uniform magnitude pruning (`uniform_magnitude`, argument
`block_size`): the flattened weight is cut into runs of `block_size` consecutive values, and each run prunes the
same int(sparsity * block_size) smallest magnitudes. Here it is an allocation of the iterative `Pruner`, so it
composes with every criterion, schedule and block pattern: `uniform_block_size` input columns of a row form a block
(null: the whole row), and every block prunes round(target * groups per block) of its lowest-scoring groups. With
`pattern=1x1` and `criterion=magnitude` that is Intel's method (block_size = the row length or a divisor of it);
with `4x1` a block is `uniform_block_size` columns of a band of 4 rows.

A block of g groups can only prune a multiple of 1/g of itself, so a block whose reachable sparsity misses the
target by more than the verification gate's tolerance is refused before training (Intel rounds down silently:
block_size=4 at 0.9 ends at 0.75).

How many groups one block holds is the pattern's answer (`span`, `row_groups`: weights/patterns/).
"""

from __future__ import annotations

import torch

from compress_sweeps.errors import ConfigError
from compress_sweeps.weights.patterns import Pattern

# how far a block's reachable sparsity, round(target * g) / g, may miss the target: the verification gate's
# tolerance on a group's sparsity (run/verify.py TARGET_TOLERANCE)
UNIFORM_TOLERANCE = 0.005


def fits_uniform(pattern: Pattern | None) -> bool:
    """Whether `pattern` cuts rows into groups (NxM blocks, N:M); channels and heads have no row to split."""
    return pattern is not None and pattern.span is not None


def block_groups(
    pattern: Pattern, shape: tuple[int, int], block: int | None, target: float, layer: str, key: str
) -> int:
    """Groups per uniform block of a `(out, in)` layer: `block` input columns (None: the whole row).

    The block must divide the row and hold whole groups (a multiple of the N of NxM blocks, of the M of N:M), and
    reach `target` within UNIFORM_TOLERANCE; `key` (`pruner.uniform_block_size`) is named in the errors.
    """
    columns = shape[1]
    size = block or columns
    unit = pattern.span
    if columns % size or size % unit:
        raise ConfigError(
            key,
            block,
            f"must divide the {columns} input columns of every selected layer and be a multiple of the {unit} "
            f"columns of the {pattern.label} pattern",
            problem=f"does not fit layer '{layer}'",
        )
    groups = pattern.row_groups(size)
    pruned = round(target * groups)
    if abs(pruned / groups - target) > UNIFORM_TOLERANCE:
        raise ConfigError(
            key,
            block,
            f"must let every block reach the target sparsity {target:g}: a block of {groups} groups of layer "
            f"'{layer}' prunes {pruned} of them ({pruned / groups:.4f}); pick a block whose group count times the "
            f"target is a whole number, or leave the layer out ({key.removesuffix('uniform_block_size')}exclude)",
            problem="cannot reach the target",
        )
    return groups


def uniform_pruned(scores: torch.Tensor, groups: int, count: int) -> torch.Tensor:
    """Bool vector marking the `count` lowest-scoring of every run of `groups` consecutive group scores.

    Pruned groups score -inf (targets.py), so they are taken first and masks only grow as `count` grows.
    """
    runs = scores.view(-1, groups)
    pruned = torch.zeros(runs.shape, dtype=torch.bool, device=scores.device)
    return pruned.scatter_(1, runs.topk(count, dim=1, largest=False).indices, True).flatten()
