"""`SlimPruner`: structured pruning of heads, FFN neurons, blocks or conv channels, ending in a smaller dense model.

Through the hook protocol, like `Pruner`: a criterion (`pruner/criterion` group) scores the weights, a schedule sets
the target at each mask update (`pruners/schedules.py`), and between updates the pruned units are masked (zero
weights, biases and BatchNorm affine; a removed block passes its input through). One budget covers every unit kind
and layer (`allocate.py`): `target` is the fraction of the prunable part's parameters or FLOPs (`target_metric`)
to remove, and each unit is weighed by what removing it saves. `finalize` folds the masks and, with `slim: true`,
cuts the pruned units out: the model that comes out is smaller and faster. What it promises (the part, the target,
whether units are cut out or left as zeros) is its `spec()`; `run/measure.py` measures the finalized model's
shapes and costs against the dense model, and `run/verify.py` checks the saved files against the promise.

One shot at attach (`start_step: 0, end_step: 0` with `slim: true`): the units are scored, chosen and cut out before
the first optimizer step, so the whole run trains the smaller model (a slimmed MiniLM at a third of the FLOPs
trains at a third of the cost, where masks keep the full-size cost until finalize), and the shapes the run ends
with are known before it trains (the planner predicts their latency). A gradient criterion gets its gradients from
`calibration_batches` forward/backward passes over training examples drawn by `seed` (no optimizer step), as
one-shot structured pruning of a trained model does (Molchanov et al. 2019's first-order Taylor scores).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.models.costs import example_shapes
from compress_sweeps.pruners.criteria import Criterion, check_first_update
from compress_sweeps.pruners.schedules import Schedule
from compress_sweeps.pruners.slim import allocate, channels, transformer
from compress_sweeps.pruners.slim.budget import Budget, example_batch
from compress_sweeps.pruners.slim.calibration import calibration_gradients
from compress_sweeps.pruners.slim.promise import zero_unit_patterns
from compress_sweeps.pruners.slim.units import BlockUnits, UnitGroup, add_mask, remove_mask, unique
from compress_sweeps.pruners.targets import mask_grads
from compress_sweeps.schema import Regexes, check_arguments
from compress_sweeps.spec import CompressionSpec, SparsityPromise, StructurePromise
from compress_sweeps.weights.selection import DEFAULT_EXCLUDE, LayerSelection

Fraction = Annotated[float, Field(ge=0, le=1)]
Unit = Literal["heads", "ffn", "blocks", "channels"]


class SlimPruner:
    """Remove `target` of the prunable part's `target_metric` as whole `units`, scored by `criterion`.

    `units`: any of heads, ffn, blocks (BERT-family encoders), or channels (CNNs). `criterion` builds the scoring
    object (a `pruner/criterion` config, `_partial_: true`); a unit scores the sum of its weights' scores. Per
    layer, the fraction of units removed stays within [min_sparsity_per_layer, max_sparsity_per_layer] and one
    head / `round_to` neurons or channels stay; FFN widths and channel counts stay multiples of `round_to`.
    `include` / `exclude` are regexes on block names (`bert.encoder.layer.3`) or convolution names. `slim: false`
    keeps the shapes (whole units of zeros; blocks need `slim: true`). `calibration_batches` (of
    `calibration_batch_size` training examples drawn by `seed`) feed a gradient criterion before a mask update at
    step 0; with `start_step = end_step = 0` and `slim: true` the units are cut out at attach (module docstring).
    """

    def __init__(
        self,
        criterion: Callable[[], Criterion],
        target: Annotated[float, Field(gt=0, lt=1)] = 0.5,
        units: Annotated[Sequence[Unit], Field(min_length=1)] = ("heads", "ffn"),
        target_metric: Literal["params", "flops"] = "flops",
        sparsity_decay: Literal["linear", "cos", "exp", "cube"] = "exp",
        start_step: int | float = 0.1,
        end_step: int | float = 0.7,
        update_frequency: int | float = 0.05,
        min_sparsity_per_layer: Fraction = 0.0,
        max_sparsity_per_layer: Fraction = 0.98,
        round_to: Annotated[int, Field(ge=1)] = 1,
        slim: bool = True,
        include: Regexes = (),
        exclude: Regexes = DEFAULT_EXCLUDE,
        calibration_batches: Annotated[int, Field(ge=0)] = 0,
        calibration_batch_size: Annotated[int, Field(ge=1)] = 16,
        seed: Annotated[int, Field(ge=0)] = 0,
    ) -> None:
        settings = {k: v for k, v in locals().items() if k not in ("self", "criterion", "__class__")}
        check_arguments(SlimPruner, settings, "pruner.")  # the signature is the schema, also for Python callers
        self.units = [str(u) for u in units]
        if len(set(self.units)) < len(self.units) or ("channels" in self.units and len(self.units) > 1):
            raise ConfigError(
                "pruner.units", self.units, "must be distinct heads/ffn/blocks (BERT-family) or [channels] (CNNs)"
            )
        if min_sparsity_per_layer > max_sparsity_per_layer:
            raise ConfigError(
                "pruner.min_sparsity_per_layer",
                min_sparsity_per_layer,
                f"must be <= pruner.max_sparsity_per_layer={max_sparsity_per_layer}",
            )
        if "blocks" in self.units and not slim:
            raise ConfigError("pruner.slim", slim, "must be true with units=[blocks]: masks cannot express a skip")
        self.criterion = criterion()
        if calibration_batches == 0:  # calibration batches give gradients before step 0
            remedy = "set pruner.calibration_batches to compute gradients on training examples first, "
            check_first_update(self.criterion, start_step, "pruner.start_step", remedy)
        self.schedule = Schedule(start_step, end_step, update_frequency, sparsity_decay)
        kinds = ("Conv2d", "Conv1d") if "channels" in self.units else ("Linear",)
        self.selection = LayerSelection(kinds, include, exclude, "pruner.")
        self.target, self.metric, self.round_to, self.slim = float(target), target_metric, round_to, bool(slim)
        self.min_s, self.max_s = min_sparsity_per_layer, max_sparsity_per_layer
        self.calibration = (calibration_batches, calibration_batch_size, seed)
        self.cut_at_attach = False  # the units went at attach (one shot at step 0): the run trains the slim model
        self.groups: list[UnitGroup] = []
        self.blocks: BlockUnits | None = None
        self.budget: Budget | None = None
        self.example: dict[str, torch.Tensor] | None = None
        self.current = 0.0  # target of the latest update
        self.saved = 0.0  # fraction of the prunable part removed by the latest update (the allocation's count)
        self.pruned_any = False

    # --- the hook protocol --------------------------------------------------------------------------------------

    def attach(self, model: nn.Module, context: RunContext) -> None:
        self.schedule.resolve(context.total_steps)
        self.example = example_batch(context)
        if self.example is None and (self.metric == "flops" or "channels" in self.units):
            raise ConfigError(
                "pruner.target_metric" if self.metric == "flops" else "pruner.units",
                self.metric if self.metric == "flops" else self.units,
                "needs an example batch (the run's training set) to count FLOPs / trace channels",
                problem="has no example input",
            )
        self.groups, self.blocks = self._units(model)
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
        if self.schedule.prunes_at(0) and self.criterion.needs_grad:
            batches, batch_size, seed = self.calibration
            for grads in calibration_gradients(model, self._weights, context, batches, batch_size, seed):
                self.criterion.observe(self._weights, grads)
        self.after_optimizer_step(0)  # a mask update scheduled at step 0 prunes before training
        if self.schedule.oneshot and self.schedule.start == 0 and self.slim:
            self._cut(model)
            self.cut_at_attach = True

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
        """Fold the masks into the weights; with `slim`, cut the pruned units out of the model."""
        if self.cut_at_attach:
            return model
        return self._cut(model)

    @torch.no_grad()
    def _cut(self, model: nn.Module) -> nn.Module:
        """Fold the masks, drop them and the skip hooks; with `slim`, remove the pruned units."""
        if self._params:
            torch._foreach_mul_(self._params, self._mask_list)
        for name in self._masks:
            remove_mask(model, name)
        for hook in self._hooks:
            hook.remove()
        if not self.slim:
            return model
        self._remove(model, self.groups, self.blocks)
        self._params, self._mask_list, self._masks, self._hooks = [], [], {}, []
        return model

    def _units(self, model: nn.Module) -> tuple[list[UnitGroup], BlockUnits | None]:
        """The unit groups (and blocks) of `model` that `units` and the layer selection name."""
        if "channels" in self.units:
            return channels.channel_units(model, self.example, self.selection, self.round_to)[0], None
        return transformer.transformer_units(model, self.units, self.selection, self.round_to)

    @staticmethod
    def _remove(model: nn.Module, groups: Sequence[UnitGroup], blocks: BlockUnits | None) -> None:
        """Cut the pruned units of `groups` (and the removed `blocks`) out of `model`."""
        if groups and groups[0].kind == "channels":
            channels.remove_channels(groups)
        else:
            transformer.remove_units(groups, blocks)
            transformer.update_hf_config(model, groups, blocks)

    def metrics(self) -> dict[str, float]:
        """The latest update's target and what the allocation removed (the finalized model is measured instead)."""
        if self.budget is None:
            return {}  # not attached
        row = {"pruner/target": self.current, f"pruner/removed_{self.metric}": self.saved}
        if self.groups:
            row["pruner/units_kept"] = sum(g.kept for g in self.groups) / sum(g.num_units for g in self.groups)
        if self.blocks is not None:
            row["pruner/blocks_kept"] = float(len(self.blocks.indices) - int(self.blocks.removed.sum()))
        return row

    # --- outside the hooks: checkpoints and what it promises ----------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        blocks = None if self.blocks is None else self.blocks.removed.clone()
        state = {"pruned": [g.pruned.clone() for g in self.groups], "blocks": blocks}
        return state | {"criterion": self.criterion.state_dict(), "current": self.current, "saved": self.saved}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.cut_at_attach:  # the units are gone: the checkpoint must be of the same cut (its weights' shapes)
            pairs = zip(self.groups, state["pruned"], strict=True)
            same = all(torch.equal(group.pruned, pruned.to(torch.bool).cpu()) for group, pruned in pairs)
            if not same:
                raise RuntimeError("the checkpoint was taken after another one-shot cut than this attach made")
            self.current, self.saved = state["current"], state["saved"]
            return
        for group, pruned in zip(self.groups, state["pruned"], strict=True):
            group.pruned = pruned.to(torch.bool).cpu().clone()
        if self.blocks is not None:
            self.blocks.removed = state["blocks"].to(torch.bool).cpu().clone()
        self.criterion.load_state_dict(state["criterion"], self._weights)
        self.current, self.saved = state["current"], state["saved"]
        self._apply_masks()

    def spec(self) -> CompressionSpec:
        """`target` of the prunable part's `target_metric` removed as whole units: cut out (`slim`), or left in
        place as zero blocks whose patterns the sparsity promise names (module names known after attach)."""
        budget = self.budget
        structure = StructurePromise(
            scope=tuple(budget.scope) if budget else (),
            target=self.target,
            target_metric=self.metric,
            tolerance=budget.largest_step(self.round_to) if budget else 0.0,
            removes_units=self.slim,
            example=example_shapes(self.example) if self.example is not None else {},
        )
        zeros = () if self.slim else (SparsityPromise(zero_unit_patterns(self.groups), None),)
        method = f"SlimPruner(criterion={self.criterion.name}, units={','.join(self.units)})"
        return CompressionSpec(method=method, sparsity=zeros, structure=structure)

    def check(self, total_steps: int, how: str = "") -> None:
        """The schedule must fit a run of `total_steps` optimizer steps (before any data or model is loaded)."""
        self.schedule.resolve(total_steps, how)

    # --- outside the hooks: the planner's screening ---------------------------------------------------------------

    def slimmed_at(
        self, model: nn.Module, context: RunContext, targets: Sequence[float]
    ) -> Iterator[tuple[float, nn.Module]]:
        """(target, the slim model a run of this pruner with `target` would cut out of `model`) for each of
        `targets` (ascending), from one attach and one calibration: the scores do not depend on the target. The
        first target beyond the most these units can remove yields the deepest cut, at that most, and ends the
        list. `model` is left as it is (the work happens on a copy); for the planner's screening."""
        work = copy.deepcopy(model)
        slim, self.slim = self.slim, False  # masks only: the units are chosen again for every target
        try:
            self.attach(work, context)
        finally:
            self.slim = slim
        most = self.budget.most_removable(self.min_s, self.max_s, self.round_to, self._block_weights, self._masks)
        originals = dict(model.named_parameters())
        for target in targets:
            self.target = min(float(target), most)
            # as a run's attach finds it: nothing pruned, the weights unmasked (an update keeps what an earlier one
            # pruned, and prices units at the shapes it left: one target after another is not one cut at each)
            with torch.no_grad():
                for name, param in work.named_parameters():
                    param.copy_(originals[name])
            for group in self.groups:
                group.pruned = torch.zeros_like(group.pruned)
            if self.blocks is not None:
                self.blocks.removed = torch.zeros_like(self.blocks.removed)
            self.update(self.schedule.end)
            slim = copy.deepcopy(model)  # the units found again on a clean copy, given this allocation, cut out
            groups, blocks = self._units(slim)
            for group, chosen in zip(groups, self.groups, strict=True):
                group.pruned = chosen.pruned.clone()
            if blocks is not None:
                blocks.removed = self.blocks.removed.clone()
            self._remove(slim, groups, blocks)
            yield self.target, slim.eval()
            if target > most + 1e-9:
                return

    # --- internals ----------------------------------------------------------------------------------------------

    def _check_reachable(self) -> None:
        most = self.budget.most_removable(self.min_s, self.max_s, self.round_to, self._block_weights, self._masks)
        if most + 1e-9 < self.target:
            raise ConfigError(
                "pruner.target",
                self.target,
                f"must be <= {most:.4f}: the most of the prunable {self.metric} that units={self.units} can remove "
                f"here while every layer keeps one head / pruner.round_to={self.round_to} neurons or channels and at "
                f"most pruner.max_sparsity_per_layer={self.max_s} of its units go",
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
