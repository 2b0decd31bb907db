"""`Pruner`: iterative or oneshot weight pruning through the hook protocol, one or several groups per run.

Per optimizer step: `before_optimizer_step` feeds gradients to gradient-based criteria and masks gradients of
pruned weights while pruning; `after_optimizer_step` recomputes masks at scheduled steps and re-applies every
mask to the weights, so a pruned weight is exactly zero after every step (AdamW's momentum would otherwise move
it). `finalize` folds the masks into the plain weights and removes the buffers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.pruners.group import PruneGroup
from compress_sweeps.pruners.targets import remove_mask

DEFAULT_EXCLUDE = ("classifier", "pooler", "embeddings")  # as the reference pruners: the head and inputs stay dense
GROUP_KEYS = (
    "criterion", "alpha", "beta", "target_sparsity", "pattern", "block_reduce", "sparsity_decay", "start_step",
    "end_step", "update_frequency", "prune_domain", "layer_types", "include", "exclude", "min_sparsity_per_layer",
    "max_sparsity_per_layer", "skip_incompatible",
)  # fmt: skip


class Pruner:
    """Prune the selected weights to `target_sparsity` by `criterion`, `pattern` and schedule.

    `groups` is an optional list of dicts with any of the keys above; each is one group pruned on its own, and the
    keys a group leaves out come from the top-level values. Without `groups`, the top-level values are one group.
    `target_sparsity: null` means 1 - N/M for N:M patterns and 0.9 otherwise.
    """

    def __init__(
        self,
        criterion: str = "snip_momentum",
        alpha: float = 1.0,
        beta: float = 0.9,
        target_sparsity: float | None = None,
        pattern: str = "4x1",
        block_reduce: str = "mean",
        sparsity_decay: str = "exp",
        start_step: int | float = 0.1,
        end_step: int | float = 0.7,
        update_frequency: int | float = 0.05,
        prune_domain: str = "global",
        layer_types: Sequence[str] = ("Linear", "Conv2d"),
        include: Sequence[str] = (),
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        min_sparsity_per_layer: float = 0.0,
        max_sparsity_per_layer: float = 0.98,
        skip_incompatible: bool = False,
        groups: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        values = locals()
        defaults = {key: values[key] for key in GROUP_KEYS}
        specs = [{}] if not groups else [_plain(g) for g in groups]
        self.groups = []
        for i, spec in enumerate(specs):
            key = "pruner." if not groups else f"pruner.groups[{i}]."
            unknown = sorted(set(spec) - set(GROUP_KEYS))
            if unknown:
                raise ConfigError(key[:-1], unknown, f"must use only {list(GROUP_KEYS)}", problem="has unknown keys")
            self.groups.append(PruneGroup(**(defaults | spec), key=key))
        self.total_steps = 0

    def attach(self, model: nn.Module, context: RunContext) -> None:
        taken: set[str] = set()
        for group in self.groups:
            group.attach(model, context.total_steps, taken)
        self.total_steps = context.total_steps
        self._weights = [w for g in self.groups for w in g.weights]
        self._masks = [m for g in self.groups for m in g.masks]
        self.after_optimizer_step(0)  # a mask update scheduled at step 0 prunes before training

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

    def layer_patterns(self) -> dict[str, str]:
        """{parameter name -> pattern label} of every pruned weight (for results.json and its pattern check)."""
        return {name: label for g in self.groups for name, label in g.labels().items()}

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
