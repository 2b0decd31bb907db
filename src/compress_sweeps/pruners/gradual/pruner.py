"""`Pruner`: iterative or oneshot weight pruning through the hook protocol, one or several groups per run.

Per optimizer step: `before_optimizer_step` feeds gradients to gradient-based criteria and masks gradients of
pruned weights while pruning; `after_optimizer_step` recomputes masks at scheduled steps and re-applies every
mask to the weights, so a pruned weight is exactly zero after every step (AdamW's momentum would otherwise move
it). `finalize` folds the masks into the plain weights and removes the buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from compress_sweeps.hooks import RunContext
from compress_sweeps.pruners.criteria import Criterion
from compress_sweeps.pruners.gradual.group import GroupSettings, PruneGroup, settings_for
from compress_sweeps.pruners.targets import remove_mask
from compress_sweeps.schema import chosen
from compress_sweeps.spec import CompressionSpec, SparsityPromise


class Pruner:
    """Prune the selected weights to `target_sparsity` by a criterion, a pattern and a schedule.

    `criterion` builds the scoring object (a `pruner/criterion` config, `_partial_: true`), once per group.
    `settings` are the keys of `GroupSettings` (group.py); `groups` is an optional list of dicts with any of those
    keys, each one group pruned on its own, the keys it leaves out taken from the top-level settings. Without
    `groups`, the top-level settings are the one group.
    """

    def __init__(
        self,
        criterion: chosen(Callable[[], Criterion], "pruner/criterion"),
        groups: Sequence[Mapping[str, Any]] | None = None,
        **settings: Any,
    ) -> None:
        defaults = settings_for(GroupSettings(), settings, "pruner.")
        overrides = [{}] if not groups else [_plain(g) for g in groups]
        self.groups = []
        for i, own in enumerate(overrides):
            key = "pruner." if not groups else f"pruner.groups[{i}]."
            self.groups.append(PruneGroup(criterion(), settings_for(defaults, own, key), key=key))
        self.total_steps = 0

    def attach(self, model: nn.Module, context: RunContext) -> None:
        self.select(model, context)
        self.after_optimizer_step(0)  # a mask update scheduled at step 0 prunes before training

    def select(self, model: nn.Module, context: RunContext) -> None:
        """Pick every group's layers and add their all-ones masks, resolve the schedules; prune nothing yet (a
        method built on these groups, like neural_wiring.py, keeps what it needs before the first mask update)."""
        taken: set[str] = set()
        for group in self.groups:
            group.attach(model, context.total_steps, taken)
        self.total_steps = context.total_steps
        self._weights = [w for g in self.groups for w in g.weights]
        self._masks = [m for g in self.groups for m in g.masks]

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        return loss

    def before_optimizer_step(self, step: int) -> None:
        for group in self.groups:
            group.before_optimizer_step(step)

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        for group in self.groups:
            if group.schedule.prunes_at(step):
                group.update_masks(step)
        if any(g.pruned_any for g in self.groups):
            torch._foreach_mul_(self._weights, self._masks)

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> nn.Module:
        """Fold the masks into the weights (exact zeros stay) and drop the mask buffers."""
        for group in self.groups:
            for target in group.targets:
                for weight, mask, module in zip(target.weights, target.masks, target.modules, strict=True):
                    weight.mul_(mask)
                    remove_mask(module)
        return model

    def state_dict(self) -> dict[str, Any]:
        """Each group's masks, criterion scores and latest target (for checkpoints; see hooks.Stateful)."""
        return {"groups": [g.state_dict() for g in self.groups]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for group, saved in zip(self.groups, state["groups"], strict=True):
            group.load_state_dict(saved)

    def spec(self) -> CompressionSpec:
        """Each group's weights reach its target sparsity in its pattern (weight names known after attach)."""
        promises = tuple(SparsityPromise(g.labels(), g.target) for g in self.groups)
        return CompressionSpec(method=f"Pruner(criterion={self.groups[0].criterion.name})", sparsity=promises)

    def check(self, total_steps: int, how: str = "") -> None:
        """Every group's schedule must fall inside the run's optimizer steps."""
        for group in self.groups:
            group.schedule.resolve(total_steps, how)

    def metrics(self) -> dict[str, float]:
        """Target sparsity of the latest mask update and achieved sparsity (counted from the weights)."""
        if not self._attached():
            return {}
        sizes = [sum(w.numel() for w in g.weights) for g in self.groups]
        total = sum(sizes)
        row = {
            "pruner/target_sparsity": sum(g.current * n for g, n in zip(self.groups, sizes, strict=True)) / total,
            "pruner/sparsity": sum(g.sparsity() * n for g, n in zip(self.groups, sizes, strict=True)) / total,
        }
        if len(self.groups) > 1:
            for i, group in enumerate(self.groups):
                row[f"pruner/group{i}/target_sparsity"] = group.current
                row[f"pruner/group{i}/sparsity"] = group.sparsity()
        return row

    def _attached(self) -> bool:
        return all(g.targets for g in self.groups)


def _plain(group: Mapping[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(group, resolve=True) if isinstance(group, DictConfig) else dict(group)
