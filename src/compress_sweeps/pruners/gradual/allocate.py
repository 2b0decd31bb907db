"""Turn per-group scores into pruned groups at a target sparsity: one threshold (`global`), per layer (`local`), or
per block of each row (`uniform`).

Each target (a layer, or an attention block for head pruning) has `num_groups` groups of `group_size` weights.
`local`: every target prunes round(target * num_groups) of its lowest-scoring groups. `global`: one score
threshold across all targets: the largest whose pruned weights stay within round(target * all weights), with each
target's count clamped to its [min, max] sparsity caps, so caps move the budget to other layers instead of losing
it. The threshold is an order statistic of the (capped) scores, found by selection, not by sorting them all.
`uniform` (uniform.py): every block of `blocks[i]` consecutive groups of target i (a block of a row) prunes the same
round(target * blocks[i]) lowest-scoring groups, within the caps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from compress_sweeps.pruners.gradual.uniform import uniform_pruned

DOMAINS = ("global", "local", "uniform")


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
    blocks: Sequence[int] = (),
) -> list[torch.Tensor]:
    """Bool vectors of pruned groups, one per target; `max_s[i]` is target i's cap (pattern limits included);
    `blocks[i]` the groups per block of target i (`uniform` only)."""
    scores = [s.float() for s in scores]
    if domain == "uniform":
        bounds = [group_bounds(g, target, min_s, cap) for g, cap in zip(blocks, max_s, strict=True)]
        counts = [min(max(round(target * g), low), high) for g, (low, high) in zip(blocks, bounds, strict=True)]
        return [uniform_pruned(s, g, k) for s, g, k in zip(scores, blocks, counts, strict=True)]
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

    A target's count clamped to [low, high] at threshold t equals the number of its scores below t once its `low`
    lowest scores are set to -inf and all but its `high` lowest to +inf. On those *capped* scores the pruned
    weights below t are a plain (weighted) count, so the threshold is one order statistic: the (K+1)-th smallest
    capped score, K = budget // group size (a sort and a cumulative sum when group sizes differ). Capping every
    target would cost a selection per target; a target whose caps do not bind at the threshold needs none (its
    capped scores sit on the same sides of it), so the threshold is first taken on the raw scores and only the
    targets whose caps bind there are capped, until none binds. Exactly the threshold a bisection over the sorted
    scores finds, at the cost of a few passes over the scores instead of a sort and dozens of counts.
    """
    lengths = [len(s) for s in scores]
    budget = round(target * sum(n * size for n, size in zip(lengths, group_sizes, strict=True)))
    flat = torch.cat(list(scores))
    capped: dict[int, torch.Tensor] = {}
    while True:
        values = flat if not capped else torch.cat([capped.get(i, s) for i, s in enumerate(scores)])
        threshold = _largest_fitting(values, group_sizes, lengths, budget)
        below = _per_target((flat < threshold).int(), lengths)
        at_most = _per_target((flat <= threshold).int(), lengths)
        binding = [
            i for i, (low, high) in enumerate(bounds) if i not in capped and (below[i] < low or at_most[i] > high)
        ]
        if not binding:
            break
        for i in binding:
            capped[i] = _capped(scores[i], *bounds[i])
    counts = [min(max(count, low), high) for count, (low, high) in zip(below, bounds, strict=True)]
    return threshold, counts


def _per_target(flags: torch.Tensor, lengths: Sequence[int]) -> list[int]:
    """Sums of consecutive runs of `lengths` (one small reduction per target, one transfer)."""
    return torch.stack([part.sum() for part in flags.split(list(lengths))]).tolist()


def _capped(scores: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """`scores` with its `low` lowest set to -inf and all but its `high` lowest set to +inf, by rank (one order of
    the ties for both ends; any order leaves the same values, which is all a count below a threshold sees)."""
    order = scores.argsort(stable=True)
    out = scores.clone()
    out[order[high:]] = float("inf")
    out[order[:low]] = float("-inf")
    return out


def _largest_fitting(values: torch.Tensor, group_sizes: Sequence[int], lengths: Sequence[int], budget: int) -> float:
    """The largest t among `values` (or +inf) with sum(group size of every value < t) <= budget."""
    if len(set(group_sizes)) == 1:
        k = budget // group_sizes[0]  # the (k+1)-th smallest value: k values lie below it, the next one would not
        if k >= len(values):
            return float("inf")
        return float(kth_smallest(values, k + 1))
    sizes = torch.tensor(list(group_sizes), dtype=torch.float64, device=values.device)
    weights = sizes.repeat_interleave(torch.tensor(list(lengths), device=values.device))
    ordered, order = values.sort()
    before = torch.cat([weights.new_zeros(1), weights[order].cumsum(0)])  # weight of the values before position p
    if float(before[-1]) <= budget:
        return float("inf")
    # the last position whose preceding weight fits: its value (ties before it only lower the weight below it)
    position = int(torch.searchsorted(before, torch.tensor([float(budget)], dtype=torch.float64), right=True)) - 1
    return float(ordered[min(position, len(ordered) - 1)])


def kth_smallest(values: torch.Tensor, k: int, sample: int = 16384) -> torch.Tensor:
    """The k-th smallest (1-based) of a 1-D tensor, exactly; O(n) passes instead of `kthvalue`'s full selection.

    A strided sample brackets the k-th value; one count below the bracket and a selection inside it (a few
    percent of the values) give it exactly; if the bracket missed, a plain `kthvalue` does.
    """
    n = len(values)
    if n <= 4 * sample:
        return values.kthvalue(k).values
    stride = n // sample
    probe = values[::stride].sort().values
    m = len(probe)
    q = (k - 0.5) / n * m
    margin = 4.0 * math.sqrt(m * 0.25) + 2  # 4 standard deviations of a sample quantile's rank, at worst
    lo = probe[max(0, math.floor(q - margin))]
    hi = probe[min(m - 1, math.ceil(q + margin))]
    below = int((values < lo).sum())
    band = values[(values >= lo) & (values <= hi)]
    if below < k <= below + len(band):
        return band.kthvalue(k - below).values
    return values.kthvalue(k).values
