"""`SlimPruner`: structured pruning of heads, FFN neurons, blocks or conv channels, ending in a smaller dense model.

Through the hook protocol, like `Pruner`: a criterion scores the weights (`pruners/criteria.py`), a schedule sets
the target at each mask update (`pruners/schedules.py`), and between updates the pruned units are masked (zero
weights, biases and BatchNorm affine; a removed block passes its input through). One budget covers every unit kind
and layer (`allocate.py`): `target` is the fraction of the prunable part's parameters or FLOPs (`target_metric`)
to remove, and each unit is weighed by what removing it saves. `finalize` folds the masks and, with `slim: true`,
removes the pruned units physically: the model that comes out is smaller and faster, and carries the record of its
per-layer shapes (`structure.py`) that rebuilds it from a run folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.pruners.criteria import make_criterion
from compress_sweeps.pruners.schedules import Schedule
from compress_sweeps.pruners.slim import allocate, channels, costs, transformer
from compress_sweeps.pruners.slim.budget import Budget
from compress_sweeps.pruners.slim.structure import describe
from compress_sweeps.pruners.slim.units import KINDS, BlockUnits, UnitGroup, add_mask, unique
from compress_sweeps.pruners.targets import mask_grads

METRICS = ("params", "flops")
DEFAULT_EXCLUDE = ("classifier", "pooler", "embeddings")


class SlimPruner:
    """Remove `target` of the prunable part's `target_metric` as whole `units`, scored by `criterion`.

    `units`: any of heads, ffn, blocks (BERT-family encoders), channels (CNNs). `criterion`: a name from
    `pruners/criteria.py` (alpha/beta for snip_momentum) or a criterion object. Per layer, the fraction of units
    removed stays within [min_sparsity_per_layer, max_sparsity_per_layer] and one head / `round_to` neurons or
    channels stay; FFN widths and channel counts stay multiples of `round_to`. `slim: false` keeps the shapes
    (masks folded into zeros; blocks need `slim: true`).
    """

    def __init__(
        self,
        target: float = 0.5,
        units: Sequence[str] = ("heads", "ffn"),
        target_metric: str = "params",
        criterion: Any = "magnitude",
        alpha: float = 1.0,
        beta: float = 0.9,
        sparsity_decay: str = "exp",
        start_step: int | float = 0.1,
        end_step: int | float = 0.7,
        update_frequency: int | float = 0.05,
        min_sparsity_per_layer: float = 0.0,
        max_sparsity_per_layer: float = 0.98,
        round_to: int = 1,
        slim: bool = True,
        include: Sequence[str] = (),
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
    ) -> None:
        self.units = [str(u) for u in units]
        if not self.units or any(u not in KINDS for u in self.units) or len(set(self.units)) < len(self.units):
            raise ConfigError("pruner.units", self.units, f"must be a non-empty list of distinct {list(KINDS)}")
        if "channels" in self.units and len(self.units) > 1:
            raise ConfigError("pruner.units", self.units, "must be [channels] alone (CNNs) or heads/ffn/blocks")
        if not 0.0 < target < 1.0:
            raise ConfigError("pruner.target", target, "must be in (0, 1): the fraction of the prunable part removed")
        if target_metric not in METRICS:
            raise ConfigError("pruner.target_metric", target_metric, f"must be one of {list(METRICS)}", "is unknown")
        if not 0.0 <= min_sparsity_per_layer <= max_sparsity_per_layer <= 1.0:
            raise ConfigError(
                "pruner.min_sparsity_per_layer",
                min_sparsity_per_layer,
                f"must satisfy 0 <= min <= pruner.max_sparsity_per_layer={max_sparsity_per_layer} <= 1",
            )
        if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
            raise ConfigError("pruner.round_to", round_to, "must be an int >= 1 (kept FFN widths / channels)")
        if "blocks" in self.units and not slim:
            raise ConfigError("pruner.slim", slim, "must be true with units=[blocks]: masks cannot express a skip")
        self.criterion = make_criterion(criterion, alpha, beta) if isinstance(criterion, str) else criterion
        if self.criterion.needs_grad and type(start_step) is int and start_step == 0:
            raise ConfigError(
                "pruner.start_step",
                0,
                "must be >= 1 (or a fraction of the run) with a criterion that scores by gradients; step 0 is "
                "before any gradient (or use pruner.criterion=magnitude)",
                problem="prunes before any gradient",
            )
        self.schedule = Schedule(start_step, end_step, update_frequency, sparsity_decay)
        self.target, self.metric, self.round_to, self.slim = float(target), target_metric, round_to, bool(slim)
        self.min_s, self.max_s = min_sparsity_per_layer, max_sparsity_per_layer
        self.include, self.exclude = list(include), list(exclude)
        self.groups: list[UnitGroup] = []
        self.blocks: BlockUnits | None = None
        self.current = 0.0  # target of the latest update
        self.saved = 0.0  # fraction of the prunable part removed by the latest update (bookkeeping)
        self.pruned_any = False
        self._structure: dict[str, Any] = {}

    # --- the hook protocol --------------------------------------------------------------------------------------

    def attach(self, model: nn.Module, context: RunContext) -> None:
        self.schedule.resolve(context.total_steps)
        self.example = _example(context)
        if self.example is None and (self.metric == "flops" or "channels" in self.units):
            raise ConfigError(
                "pruner.target_metric" if self.metric == "flops" else "pruner.units",
                self.metric if self.metric == "flops" else self.units,
                "needs an example batch (the run's training set) to count FLOPs / trace channels",
                problem="has no example input",
            )
        if "channels" in self.units:
            self.groups, self.graph = channels.channel_units(
                model, self.example, self.include, self.exclude, self.round_to
            )
        else:
            self.groups, self.blocks = transformer.transformer_units(
                model, self.units, self.include, self.exclude, self.round_to
            )
        params = dict(model.named_parameters())
        block_weights = self.blocks.scored_params(params) if self.blocks is not None else []
        self._scored = unique([n for g in self.groups for n in g.scored_params()] + sum(block_weights, []))
        self._block_weights = block_weights
        self._weights = [params[n] for n in self._scored]
        masked = unique([s.name for g in self.groups for s in g.slices])
        self._params = [params[n] for n in masked]
        self._masks = {n: add_mask(model, n) for n in masked}
        self._mask_list = list(self._masks.values())  # aligned with self._params, for the per-step foreach ops
        self.budget = Budget(model, self.groups, self.blocks, self.metric, self.example)
        self._hooks = [] if self.blocks is None else transformer.skip_hooks(self.blocks)
        self._check_reachable()
        self.after_optimizer_step(0)  # a mask update scheduled at step 0 prunes before training

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        return loss

    @torch.no_grad()
    def before_optimizer_step(self, step: int) -> None:
        sched, crit = self.schedule, self.criterion
        if (crit.accumulates and step <= sched.end) or (crit.needs_grad and sched.prunes_at(step)):
            crit.observe(self._weights, [w.grad if w.grad is not None else torch.zeros_like(w) for w in self._weights])
        if self.pruned_any and sched.active(step):
            mask_grads(self._params, self._mask_list)

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        if self.schedule.prunes_at(step):
            self.update(step)
        if self.pruned_any and self._params:
            torch._foreach_mul_(self._params, self._mask_list)

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> nn.Module:
        """Fold the masks into the weights; with `slim`, remove the pruned units and record the new shapes."""
        if self._params:
            torch._foreach_mul_(self._params, self._mask_list)
        for name in self._masks:
            module_name, _, attr = name.rpartition(".")
            delattr(model.get_submodule(module_name), f"{attr}_mask")
        for hook in self._hooks:
            hook.remove()
        self._structure = self._summary()
        if not self.slim:
            return model
        params_before = sum(p.numel() for p in model.parameters())
        dropped: dict[str, list[int]] = {}
        if "channels" in self.units:
            channels.remove_channels(self.groups)
        else:
            if self.blocks is not None:
                gone = [i for i, g in zip(self.blocks.indices, self.blocks.removed.tolist(), strict=True) if g]
                dropped = {self.blocks.prefix: gone} if gone else {}
            transformer.remove_units(self.groups, self.blocks)
            transformer.update_hf_config(model, self.groups, self.blocks, self._structure)
        model.slim_structure = describe(model, dropped)
        # the prunable part after = before - what the whole model lost, both measured on the models themselves
        before = self.budget.prunable
        measured = {"params": before["params"] - (params_before - sum(p.numel() for p in model.parameters()))}
        if self.example is not None:
            flops_after = costs.module_flops(model, self.example)[""]
            measured["flops"] = before["flops"] - (self.budget.model_flops - flops_after)
        self._structure["prunable_after"] = measured
        self._structure["removed"] = {k: 1.0 - measured[k] / before[k] for k in measured}
        return model

    def metrics(self) -> dict[str, float]:
        if not self.groups and self.blocks is None:
            return {}  # not attached
        row = {"pruner/target": self.current, f"pruner/removed_{self.metric}": self.saved}
        if self.groups:
            row["pruner/units_kept"] = sum(g.kept for g in self.groups) / sum(g.num_units for g in self.groups)
        if self.blocks is not None:
            row["pruner/blocks_kept"] = float(len(self.blocks.indices) - int(self.blocks.removed.sum()))
        return row

    # --- outside the hooks: checkpoints, structure --------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        blocks = None if self.blocks is None else self.blocks.removed.clone()
        state = {"pruned": [g.pruned.clone() for g in self.groups], "blocks": blocks}
        return state | {"criterion": self.criterion.state_dict(), "current": self.current, "saved": self.saved}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for group, pruned in zip(self.groups, state["pruned"], strict=True):
            group.pruned = pruned.to(torch.bool).cpu().clone()
        if self.blocks is not None:
            self.blocks.removed = state["blocks"].to(torch.bool).cpu().clone()
        self.criterion.load_state_dict(state["criterion"], self._weights)
        self.current, self.saved = state["current"], state["saved"]
        self._apply_masks()

    def check(self, total_steps: int, how: str = "") -> None:
        """The schedule must fit a run of `total_steps` optimizer steps (before any data or model is loaded)."""
        self.schedule.resolve(total_steps, how)

    def structure(self) -> dict[str, Any]:
        """Per-layer shapes after finalize (heads, FFN widths, blocks kept, channels) and the prunable part's cost
        before and after, measured on the finalized model (for results.json `compression.structure`)."""
        return self._structure or self._summary()

    # --- internals ----------------------------------------------------------------------------------------------

    def _check_reachable(self) -> None:
        leaves = self.budget.leaves(None, self.target, self.min_s, self.max_s, self.round_to)
        blocks = self.budget.block_priorities(None, self._block_weights, self._masks)
        _, _, most = allocate.counts_at(leaves, blocks, float("inf"))
        total = self.budget.total
        if most + 1e-9 * total < self.target * total:
            raise ConfigError(
                "pruner.target",
                self.target,
                f"must be <= {most / total:.4f}: the most of the prunable {self.metric} that units="
                f"{self.units} can remove here while every layer keeps one head / pruner.round_to={self.round_to} "
                f"neurons or channels and at most pruner.max_sparsity_per_layer={self.max_s} of its units go",
                problem="cannot be reached",
            )

    @torch.no_grad()
    def update(self, step: int) -> None:
        """A scheduled mask update: scores -> priorities -> one global allocation -> pruned units -> masks."""
        self.current = self.schedule.target(step, self.target)
        scores = dict(zip(self._scored, self.criterion.scores(self._weights), strict=True))
        leaves = self.budget.leaves(scores, self.current, self.min_s, self.max_s, self.round_to)
        blocks = self.budget.block_priorities(scores, self._block_weights, self._masks)
        counts, gone, saved = allocate.allocate(leaves, blocks, self.current * self.budget.total)
        for group, row, count in zip(self.groups, leaves.priority, counts.tolist(), strict=True):
            pruned = torch.zeros(group.num_units, dtype=torch.bool)
            pruned[row[: group.num_units].topk(count, largest=False).indices] = True
            group.pruned = pruned
        if self.blocks is not None:
            self.blocks.removed = gone.clone()
        self.saved = saved / self.budget.total
        self._apply_masks()

    @torch.no_grad()
    def _apply_masks(self) -> None:
        for mask in self._masks.values():
            mask.fill_(1.0)
        for group in self.groups:
            group.zero_masks(self._masks)
        self.pruned_any = True

    def _summary(self) -> dict[str, Any]:
        """Kept units per layer, named as in the slim model (blocks after a removed one move up)."""
        rename = {}
        if self.blocks is not None and self.slim:
            kept_blocks = [i for i, g in zip(self.blocks.indices, self.blocks.removed.tolist(), strict=True) if not g]
            others = [i for i in range(len(self.blocks.container)) if i not in self.blocks.indices]
            order = sorted(kept_blocks + others)
            rename = {f"{self.blocks.prefix}.{old}.": f"{self.blocks.prefix}.{new}." for new, old in enumerate(order)}
        layers = {}
        for g in self.groups:
            if g.block is not None and bool(self.blocks.removed[g.block]):
                continue
            name = next((new + g.name[len(old) :] for old, new in rename.items() if g.name.startswith(old)), g.name)
            layers[name] = {"kind": g.kind, "kept": g.kept, "total": g.num_units}
        summary: dict[str, Any] = {"units": self.units, "target_metric": self.metric, "target": self.target}
        summary |= {"slim": self.slim, "layers": layers, "prunable_before": dict(self.budget.prunable)}
        if self.blocks is not None:
            kept = [i for i, g in zip(self.blocks.indices, self.blocks.removed.tolist(), strict=True) if not g]
            summary["blocks"] = {"list": self.blocks.prefix, "kept": kept, "total": len(self.blocks.container)}
        return summary


def _example(context: RunContext) -> dict[str, torch.Tensor] | None:
    """The first training row as a batch of one, on the run's device (what FLOPs are counted and traced on)."""
    if context.train_set is None or len(context.train_set) == 0:
        return None
    row = context.train_set[0]
    keys = [k for k in context.input_keys if k in row] or [k for k in row if k not in ("labels", "idx")]
    return {k: torch.as_tensor(row[k]).unsqueeze(0).to(context.device) for k in keys}
