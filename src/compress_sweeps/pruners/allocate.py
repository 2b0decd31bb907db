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
    scores = [s.float() for s in scores]
    bounds = [group_bounds(len(s), target, min_s, cap) for s, cap in zip(scores, max_s, strict=True)]
    if domain == "local":
        counts = [min(max(round(target * len(s)), low), high) for s, (low, high) in zip(scores, bounds, strict=True)]
        return [_lowest(s, k) for s, k in zip(scores, counts, strict=True)]
    threshold, counts = _global_threshold(scores, group_sizes, bounds, target)
    pruned = []
    for s, count in zip(scores, counts, strict=True):
        below = s < threshold
        # a cap moved this target's count off the threshold: take exactly its `count` lowest groups instead
        pruned.append(below if int(below.sum()) == count else _lowest(s, count))
    return pruned


def _lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    mask = torch.zeros(len(scores), dtype=torch.bool, device=scores.device)
    mask[scores.topk(count, largest=False).indices] = True
    return mask


def _global_threshold(
    scores: Sequence[torch.Tensor], group_sizes: Sequence[int], bounds: Sequence[tuple[int, int]], target: float
) -> tuple[float, list[int]]:
    """The largest threshold whose pruned weights stay within the budget, and each target's clamped count there.

    Candidate thresholds are the sorted scores (one values-only sort; +inf marks groups never to prune); the count
    of every target at a threshold comes from one compare and one bincount, cheaper than sorting every target.
    """
    budget = round(target * sum(len(s) * size for s, size in zip(scores, group_sizes, strict=True)))
    flat = torch.cat(list(scores))
    owner = torch.cat([torch.full((len(s),), i, device=flat.device) for i, s in enumerate(scores)])
    low = torch.tensor([b[0] for b in bounds], device=flat.device)
    high = torch.tensor([b[1] for b in bounds], device=flat.device)
    candidates = flat.sort().values
    last = int((candidates != float("inf")).sum())

    def threshold(index: int) -> float:
        return float("inf") if index == last else float(candidates[index])

    def counts_at(index: int) -> list[int]:
        # one bincount over all targets: a few large ops, not one small op per layer (costly with many threads)
        below = torch.bincount(owner[flat < threshold(index)], minlength=len(scores))
        return torch.minimum(torch.maximum(below, low), high).tolist()

    def fits(index: int) -> bool:
        return sum(c * size for c, size in zip(counts_at(index), group_sizes, strict=True)) <= budget

    lo, hi = 0, last  # invariant: lo fits (or is 0, the least the min caps allow); hi does not, unless hi == last
    if fits(hi):
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return threshold(lo), counts_at(lo)
