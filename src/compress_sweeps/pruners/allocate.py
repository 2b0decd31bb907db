"""Turn per-group scores into pruned groups at a target sparsity: per layer (`local`) or one threshold (`global`).

Each target (a layer, or an attention block for head pruning) has `num_groups` groups of `group_size` weights.
`local`: every target prunes round(target * num_groups) of its lowest-scoring groups. `global`: one score
threshold across all targets, chosen so that the pruned weights add up to round(target * all weights); the
threshold is found by bisection over the sorted scores, with each target's count clamped to its
[min, max] sparsity caps inside the search, so caps move the budget to other layers instead of losing it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

DOMAINS = ("global", "local")


def group_bounds(num_groups: int, target: float, min_s: float, max_s: float) -> tuple[int, int]:
    """Fewest and most groups a target may prune: min cap (never above the current target) and max cap."""
    high = math.floor(max_s * num_groups + 1e-9)
    low = min(math.ceil(min(min_s, target) * num_groups - 1e-9), high)
    return low, high


def allocate(
    scores: Sequence[torch.Tensor],
    group_sizes: Sequence[int],
    target: float,
    domain: str,
    min_s: float,
    max_s: Sequence[float],
) -> list[torch.Tensor]:
    """Bool vectors of pruned groups, one per target; `max_s[i]` is target i's cap (pattern limits included)."""
    bounds = [group_bounds(len(s), target, min_s, cap) for s, cap in zip(scores, max_s, strict=True)]
    ordered = [s.float().sort() for s in scores]
    if domain == "local":
        counts = [min(max(round(target * len(s)), low), high) for s, (low, high) in zip(scores, bounds, strict=True)]
    else:
        counts = _global_counts([o.values for o in ordered], group_sizes, bounds, target)
    pruned = []
    for (_, order), count in zip(ordered, counts, strict=True):
        mask = torch.zeros(len(order), dtype=torch.bool, device=order.device)
        mask[order[:count]] = True
        pruned.append(mask)
    return pruned


def _global_counts(
    sorted_scores: Sequence[torch.Tensor], group_sizes: Sequence[int], bounds: Sequence[tuple[int, int]], target: float
) -> list[int]:
    """Per-target group counts under the largest threshold whose pruned weights stay within the budget."""
    budget = round(target * sum(len(s) * size for s, size in zip(sorted_scores, group_sizes, strict=True)))
    candidates = torch.cat([s.cpu() for s in sorted_scores]).sort().values
    candidates = candidates[torch.isfinite(candidates) | (candidates < 0)]  # +inf marks groups never to prune

    def counts_at(threshold: float) -> list[int]:
        counts = []
        for s, (low, high) in zip(sorted_scores, bounds, strict=True):
            below = int(torch.searchsorted(s, torch.tensor([threshold], device=s.device, dtype=s.dtype)))
            counts.append(min(max(below, low), high))
        return counts

    def weights_at(counts: list[int]) -> int:
        return sum(c * size for c, size in zip(counts, group_sizes, strict=True))

    # threshold index i: prune the groups scoring below candidates[i] (i == last: below +inf); the pruned weight
    # count never decreases with i, so bisection finds the largest threshold within the budget
    last = len(candidates)

    def threshold(index: int) -> float:
        return float("inf") if index == last else float(candidates[index])

    lo, hi = 0, last  # invariant: threshold(lo) fits the budget (or lo == 0, the least that caps allow)
    if weights_at(counts_at(threshold(hi))) <= budget:
        return counts_at(threshold(hi))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if weights_at(counts_at(threshold(mid))) <= budget:
            lo = mid
        else:
            hi = mid
    return counts_at(threshold(lo))
