"""One budget across unit kinds and layers: remove the units that give up the least score per cost saved.

Every unit has a *priority* = (sum of its weights' scores) / (what removing it saves now, in parameters or FLOPs):
its importance per parameter or FLOP, the greedy ratio of a knapsack. One threshold t over all priorities decides:
a layer removes its units below t (clamped to its [low, high] counts, then rounded so the kept count is a multiple
of `round_to`), a block goes whole when its own priority (its kept weights' scores over its remaining cost) is below
t. The removed cost at t is counted exactly (costs.Terms: a layer whose rows and columns both shrink is not counted
twice). It only grows with t (a removed block saves at least what any of its units would), so bisection
over the sorted priorities finds the largest t whose removed cost stays within the budget. Already removed units
have priority -inf and stay removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress_sweeps.pruners.slim.costs import Terms


@dataclass
class Leaves:
    """All layers' units, padded into one matrix so that a count at a threshold is one comparison."""

    priority: torch.Tensor  # [layers, most units] float64; +inf pads, -inf = already removed
    units: torch.Tensor  # [layers] units per layer
    low: torch.Tensor  # [layers] fewest units to remove (min cap, what is already removed), a rounded count
    high: torch.Tensor  # [layers] most units to remove (max cap, keeping min_kept)
    round_to: torch.Tensor  # [layers] the kept count is a multiple of this (or all units)
    terms: Terms  # the cost of the layers as a function of their kept fractions
    block: torch.Tensor  # [layers] index of the layer's block, or the number of blocks when none


@dataclass
class Blocks:
    priority: torch.Tensor  # [blocks]; -inf = already removed
    cost: torch.Tensor  # [blocks] what removing the whole block saves
    high: int  # most blocks to remove


def pad(rows: list[torch.Tensor]) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), float("inf"), dtype=torch.float64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def rounded(count: torch.Tensor, units: torch.Tensor, round_to: torch.Tensor) -> torch.Tensor:
    """Remove fewer units where needed so that the kept count is a multiple of `round_to` (or all units)."""
    kept = units - count
    kept = torch.minimum(torch.div(kept + round_to - 1, round_to, rounding_mode="floor") * round_to, units)
    return units - kept


def saved_by(leaves: Leaves, blocks: Blocks | None, counts: torch.Tensor, gone: torch.Tensor) -> float:
    """The cost saved when layer l removes `counts[l]` units and the blocks `gone` go whole."""
    terms = leaves.terms
    removed = terms.coef - terms.kept((leaves.units - counts) / leaves.units)
    if blocks is None:
        return float(removed.sum())
    in_gone_block = torch.cat([gone, torch.zeros(1, dtype=torch.bool)])[terms.block]
    return float(removed[~in_gone_block].sum()) + float(blocks.cost[gone].sum())


def counts_at(leaves: Leaves, blocks: Blocks | None, threshold: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Units removed per layer, blocks removed, and the cost they save, at `threshold`."""
    below = (leaves.priority < threshold).sum(dim=1)
    counts = rounded(torch.clamp(below, leaves.low, leaves.high), leaves.units, leaves.round_to)
    if blocks is None:
        gone = torch.zeros(0, dtype=torch.bool)
        return counts, gone, saved_by(leaves, blocks, counts, gone)
    gone = blocks.priority < threshold
    if int(gone.sum()) > blocks.high:  # keep the blocks of highest priority beyond the cap
        rank = torch.empty_like(blocks.priority, dtype=torch.long)
        rank[blocks.priority.argsort(stable=True)] = torch.arange(len(blocks.priority))
        gone &= rank < blocks.high
    return counts, gone, saved_by(leaves, blocks, counts, gone)


def allocate(leaves: Leaves, blocks: Blocks | None, budget: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The removal at the largest threshold whose saved cost is within `budget` (the mins may exceed it), then
    filled up to the budget.

    A block's removal, or a layer's next `round_to` units, is a jump in the saved cost: the threshold just below it
    can leave much of the budget unspent. So the blocks are decided first and frozen, then the threshold is found
    for the layers' units, and last each layer, in the order of its next units' priority, takes as many more
    units as still fit.
    """
    counts, gone, saved = _search(leaves, blocks, budget)
    if blocks is not None:
        inf = torch.full_like(blocks.priority, float("inf"))
        blocks = Blocks(torch.where(gone, -inf, inf), blocks.cost, blocks.high)
        counts, gone, saved = _search(leaves, blocks, budget)
    return _fill(leaves, blocks, counts, gone, budget)


def _with_count(leaves: Leaves, counts: torch.Tensor, layer: int, count: int) -> torch.Tensor:
    """`counts` with layer `layer` set to `count`, rounded to its `round_to`."""
    trial = counts.clone()
    trial[layer] = count
    span = slice(layer, layer + 1)
    trial[span] = rounded(trial[span], leaves.units[span], leaves.round_to[span])
    return trial


def _fill(
    leaves: Leaves, blocks: Blocks | None, counts: torch.Tensor, gone: torch.Tensor, budget: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Greedy top-up: layers in order of their next unit's priority each remove the most units that still fit
    (the saved cost grows with a layer's count, so a bisection over its count finds it)."""
    counts = counts.clone()
    ordered = leaves.priority.sort(dim=1).values
    nxt = ordered.gather(1, counts.clamp(max=max(ordered.shape[1] - 1, 0)).unsqueeze(1)).squeeze(1)
    in_gone = torch.cat([gone, torch.zeros(1, dtype=torch.bool)])[leaves.block] if blocks is not None else None
    for layer in nxt.argsort(stable=True).tolist():
        if in_gone is not None and bool(in_gone[layer]):
            continue  # its block goes whole: its units save nothing more
        base = counts

        def fits(count: int, layer: int = layer, base: torch.Tensor = base) -> bool:
            return saved_by(leaves, blocks, _with_count(leaves, base, layer, count), gone) <= budget

        lo, hi = int(counts[layer]), int(leaves.high[layer])
        if hi > lo and fits(hi):
            lo = hi
        while hi - lo > 1:  # lo fits, hi does not
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        counts = _with_count(leaves, counts, layer, lo)
    return counts, gone, saved_by(leaves, blocks, counts, gone)


def _search(leaves: Leaves, blocks: Blocks | None, budget: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    parts = [leaves.priority.reshape(-1)] + ([blocks.priority] if blocks is not None else [])
    candidates = torch.cat(parts)
    candidates = candidates[torch.isfinite(candidates)].unique()  # sorted
    last = len(candidates)

    def at(index: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        return counts_at(leaves, blocks, float("inf") if index == last else float(candidates[index]))

    lo, hi = 0, last  # lo fits (or is the least the mins allow); hi does not, unless hi == last and it fits
    if at(hi)[2] <= budget:
        return at(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if at(mid)[2] <= budget else (lo, mid)
    return at(lo)
