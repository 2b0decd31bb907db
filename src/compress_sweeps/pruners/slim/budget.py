"""What the allocation needs from a model: the cost terms of its units, block costs, the prunable part's total,
and each unit's priority (its score over what removing it saves now).

Built once at attach (one FLOP count on an example batch); asked at every mask update for the inputs of
`allocate.allocate`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from compress_sweeps.hooks import RunContext
from compress_sweeps.models import costs as counted
from compress_sweeps.pruners.slim import allocate, costs
from compress_sweeps.pruners.slim.units import BlockUnits, UnitGroup


class Budget:
    """Costs of `groups` (and `blocks`) in `metric` (params | flops), measured on `model` at attach."""

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[UnitGroup],
        blocks: BlockUnits | None,
        metric: str,
        example: Mapping[str, torch.Tensor] | None,
    ) -> None:
        self.groups, self.blocks, self.metric = list(groups), blocks, metric
        flops = counted.module_flops(model, example) if example is not None else None
        self.model_flops = flops[""] if flops is not None else None  # the whole model's, to measure the slim one
        nblocks = len(blocks.indices) if blocks is not None else 0
        self.in_block = [g.block if g.block is not None else nblocks for g in self.groups]
        self.terms = costs.cost_terms(self.groups, self.in_block, flops if metric == "flops" else None)
        scope = [n for g in self.groups for n in g.scope] + (blocks.names if blocks is not None else [])
        self.scope = counted.outermost(scope)  # the prunable part: module names in the model as attached
        self.prunable = {"params": counted.scope_cost(model, scope, None)}
        if flops is not None:
            self.prunable["flops"] = counted.scope_cost(model, scope, flops)
        if blocks is not None:
            per_block = [
                counted.module_params(model, [n]) if metric == "params" else flops.get(n, 0.0) for n in blocks.names
            ]
            blocks.cost = torch.tensor(per_block, dtype=torch.float64)
        self.total = self.prunable[metric]

    def largest_step(self, round_to: int) -> float:
        """The most one unit decision saves (one head, `round_to` neurons or channels; one block when blocks are
        the only units), at the model's full shapes, as a fraction of the prunable total: how far below the target
        the allocation may stop, since it decides blocks first and then tops up with heads, neurons and channels
        until no further one fits."""
        if not self.groups:
            return float(self.blocks.cost.max()) / self.total if self.blocks is not None else 0.0
        units = torch.tensor([g.num_units for g in self.groups], dtype=torch.long)
        per_unit = self.terms.marginal(torch.ones(len(units), dtype=torch.float64), units).tolist()
        steps = [c * (1 if g.kind == "heads" else round_to) for g, c in zip(self.groups, per_unit, strict=True)]
        return max(steps) / self.total

    def most_removable(
        self, min_s: float, max_s: float, round_to: int, block_weights: Sequence[Sequence[str]], masks: Mapping
    ) -> float:
        """The largest fraction of the prunable total the units can remove within the per-layer caps."""
        leaves = self.leaves(None, 1.0, min_s, max_s, round_to)
        blocks = self.block_priorities(None, block_weights, masks)
        return allocate.counts_at(leaves, blocks, float("inf"))[2] / self.total

    def fractions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept fraction and unit count per group."""
        units = torch.tensor([g.num_units for g in self.groups], dtype=torch.long)
        kept = torch.tensor([g.kept for g in self.groups], dtype=torch.float64)
        return kept / units, units

    def leaves(
        self,
        scores: Mapping[str, torch.Tensor] | None,
        target: float,
        min_s: float,
        max_s: float,
        round_to: int,
    ) -> allocate.Leaves:
        """Every group's unit priorities and count bounds (scores None: only the bounds, all priorities 0)."""
        fractions, units = self.fractions()
        # what one more unit of each layer saves now (its share of every term it scales, at today's kept shapes)
        per_unit = self.terms.marginal(fractions, units) if self.groups else torch.zeros(0, dtype=torch.float64)
        rows, low, high, rounds = [], [], [], []
        for group, cost in zip(self.groups, per_unit.tolist(), strict=True):
            n = group.num_units
            if scores is None:
                priority = torch.zeros(n, dtype=torch.float64)
            else:
                priority = group.unit_scores(scores) / max(cost, 1e-12)
            priority[group.pruned] = float("-inf")
            most = min(math.floor(max_s * n + 1e-9), n - group.min_kept)
            least = max(math.ceil(min(min_s, target) * n - 1e-9), int(group.pruned.sum()))
            rows.append(priority)
            high.append(most)
            low.append(min(least, most))
            rounds.append(1 if group.kind == "heads" else round_to)
        long = {"dtype": torch.long}
        rounds_t = torch.tensor(rounds, **long)
        return allocate.Leaves(
            priority=allocate.pad(rows),
            units=units,
            low=allocate.rounded(torch.tensor(low, **long), units, rounds_t),
            high=torch.tensor(high, **long),
            round_to=rounds_t,
            terms=self.terms,
            block=torch.tensor(self.in_block, **long),
        )

    def block_priorities(
        self,
        scores: Mapping[str, torch.Tensor] | None,
        block_weights: Sequence[Sequence[str]],
        masks: Mapping[str, torch.Tensor],
    ) -> allocate.Blocks | None:
        """Per block: the scores of its kept weights over the cost it still has (what removing it saves now)."""
        blocks = self.blocks
        if blocks is None:
            return None
        fractions, _ = self.fractions()
        spent = torch.zeros(len(blocks.indices) + 1, dtype=torch.float64)
        spent.index_add_(0, self.terms.block, self.terms.coef - self.terms.kept(fractions))
        priority = torch.zeros(len(blocks.indices), dtype=torch.float64)
        for b, names in enumerate(block_weights):
            remaining = float(blocks.cost[b] - spent[b])
            if scores is not None:
                total = 0.0
                for name in names:
                    mask, score = masks.get(name), scores[name].detach()
                    total += float((score * mask).sum() if mask is not None else score.sum())
                priority[b] = total / max(remaining, 1e-12)
        priority[blocks.removed] = float("-inf")
        return allocate.Blocks(priority, blocks.cost, len(blocks.indices) - blocks.min_kept)


def example_batch(context: RunContext) -> dict[str, torch.Tensor] | None:
    """The first training row as a batch of one, on the run's device (what FLOPs are counted and traced on)."""
    if context.train_set is None or len(context.train_set) == 0:
        return None
    row = context.train_set[0]
    keys = [k for k in context.input_keys if k in row] or [k for k in row if k not in ("labels", "idx")]
    return {k: torch.as_tensor(row[k]).unsqueeze(0).to(context.device) for k in keys}
