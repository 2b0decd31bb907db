"""One pruner group: a criterion, a pattern, a schedule and a layer selection, with its targets and masks.

A run may prune several groups at once (e.g. attention heads in one group, 4x1 blocks of the FFN in another);
each group keeps its own scores, masks and schedule. The `Pruner` drives them through the hook protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.pruners.criteria import Criterion, check_first_update
from compress_sweeps.pruners.gradual.allocate import DOMAINS, allocate
from compress_sweeps.pruners.gradual.heads import select_heads
from compress_sweeps.pruners.gradual.uniform import block_groups, fits_uniform
from compress_sweeps.pruners.schedules import Schedule
from compress_sweeps.pruners.targets import mask_grads, select_layers
from compress_sweeps.schema import Regexes, check_arguments
from compress_sweeps.weights.patterns import REDUCTIONS, parse_pattern, resolve_sparsity
from compress_sweeps.weights.selection import DEFAULT_EXCLUDE, DEFAULT_LAYER_TYPES, LayerSelection

DEFAULT_TARGET_SPARSITY = 0.9  # when target_sparsity is null and the pattern does not fix it (N:M does)


@dataclass(frozen=True)
class GroupSettings:
    """Everything one pruning group is configured by (the pruner's top-level keys, or one entry of `groups`).

    `target_sparsity: null` means 1 - N/M for N:M patterns and 0.9 otherwise. `pattern` is a weight pattern
    (`4x1`, `1x1`, `2:4`, `channel`; weights/patterns/) or `head` (attention heads, pruners/gradual/heads.py).
    Schedule steps are an int step or a fraction of the run (pruners/schedules.py). `uniform_block_size`: with
    `prune_domain: uniform`, the input columns of one block of a row (null: the whole row; pruners/gradual/uniform.py).
    """

    target_sparsity: float | None = None
    pattern: str = "4x1"
    block_reduce: Literal["mean", "sum", "max"] = "mean"
    sparsity_decay: Literal["linear", "cos", "exp", "cube"] = "exp"
    start_step: int | float = 0.1
    end_step: int | float = 0.7
    update_frequency: int | float = 0.05
    prune_domain: Literal["global", "local", "uniform"] = "global"
    uniform_block_size: int | None = None
    layer_types: Sequence[str] = DEFAULT_LAYER_TYPES
    include: Regexes = ()
    exclude: Regexes = DEFAULT_EXCLUDE
    min_sparsity_per_layer: float = 0.0
    max_sparsity_per_layer: float = 0.98
    skip_incompatible: bool = False


def settings_for(defaults: GroupSettings, overrides: Mapping[str, Any], key: str) -> GroupSettings:
    """`defaults` with one group's own keys, each checked against its annotated type; an unknown key is a
    ConfigError naming it."""
    known = {f.name for f in fields(GroupSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(key.rstrip("."), unknown, f"must use only {sorted(known)}", problem="has unknown keys")
    check_arguments(GroupSettings, overrides, key)
    return replace(defaults, **overrides)


class PruneGroup:
    """Settings and state of one group; `key` is the config path its error messages name (e.g. `pruner.`)."""

    def __init__(self, criterion: Criterion, settings: GroupSettings, key: str = "pruner.") -> None:
        s = settings
        self.criterion = criterion
        check_first_update(criterion, s.start_step, f"{key}start_step")
        self.heads = str(s.pattern).strip().lower() == "head"
        self.pattern = None if self.heads else parse_pattern(s.pattern, f"{key}pattern")
        self.target = DEFAULT_TARGET_SPARSITY if s.target_sparsity is None else float(s.target_sparsity)
        if self.pattern is not None:  # a pattern may fix the sparsity (N:M)
            self.target = resolve_sparsity(self.pattern, s.target_sparsity, self.target, f"{key}target_sparsity")
        if not 0.0 < self.target < 1.0:
            raise ConfigError(f"{key}target_sparsity", s.target_sparsity, "must be in (0, 1) or null")
        if s.block_reduce not in REDUCTIONS:
            raise ConfigError(f"{key}block_reduce", s.block_reduce, f"must be one of {list(REDUCTIONS)}", "is unknown")
        if s.prune_domain not in DOMAINS:
            raise ConfigError(f"{key}prune_domain", s.prune_domain, f"must be one of {list(DOMAINS)}", "is unknown")
        if s.uniform_block_size is not None and (s.prune_domain != "uniform" or s.uniform_block_size < 1):
            raise ConfigError(
                f"{key}uniform_block_size",
                s.uniform_block_size,
                f"must be null, or an int >= 1 with {key}prune_domain=uniform (it is {s.prune_domain})",
            )
        if s.prune_domain == "uniform" and not fits_uniform(self.pattern):
            raise ConfigError(
                f"{key}prune_domain",
                s.prune_domain,
                f"must be global or local with {key}pattern={s.pattern}: uniform cuts rows into blocks, and whole "
                "channels or heads have none",
                problem=f"does not fit {key}pattern={s.pattern}",
            )
        if not 0.0 <= s.min_sparsity_per_layer <= s.max_sparsity_per_layer <= 1.0:
            raise ConfigError(
                f"{key}min_sparsity_per_layer",
                s.min_sparsity_per_layer,
                f"must satisfy 0 <= min <= {key}max_sparsity_per_layer={s.max_sparsity_per_layer} <= 1",
            )
        if s.min_sparsity_per_layer > self.target:
            raise ConfigError(
                f"{key}min_sparsity_per_layer",
                s.min_sparsity_per_layer,
                f"must be <= the group's target sparsity {self.target:g}: every layer cannot prune more than the whole",
                problem="exceeds the target",
            )
        if self.target > s.max_sparsity_per_layer:
            raise ConfigError(
                f"{key}target_sparsity",
                self.target,
                f"must be <= {key}max_sparsity_per_layer={s.max_sparsity_per_layer}",
            )
        self.schedule = Schedule(s.start_step, s.end_step, s.update_frequency, s.sparsity_decay, key)
        self.selection = LayerSelection(s.layer_types, s.include, s.exclude, key)
        self.reduce, self.domain, self.skip = s.block_reduce, s.prune_domain, s.skip_incompatible
        self.uniform_block, self.blocks = s.uniform_block_size, []  # blocks: groups per uniform block, per target
        self.min_s, self.max_s = s.min_sparsity_per_layer, s.max_sparsity_per_layer
        self.key = key
        self.targets: list = []
        self.skipped: list[str] = []
        self.current = 0.0  # target sparsity of the latest mask update
        self.pruned_any = False

    def attach(self, model: nn.Module, total_steps: int, taken: set[str]) -> None:
        """Select this group's layers (or attention blocks) and resolve its schedule against the run length."""
        self.schedule.resolve(total_steps)
        if self.heads:
            self.targets = select_heads(model, self.selection, self.reduce, taken)
        else:
            self.targets, self.skipped = select_layers(
                model, self.selection, self.pattern, self.reduce, self.skip, taken
            )
        if not self.targets:
            raise self.selection.no_layer(model)
        if self.domain == "uniform":
            key = f"{self.key}uniform_block_size"
            self.blocks = [
                block_groups(self.pattern, t.shape, self.uniform_block, self.target, t.name, key) for t in self.targets
            ]

    @property
    def weights(self) -> list[torch.Tensor]:
        return [w for t in self.targets for w in t.weights]

    @property
    def masks(self) -> list[torch.Tensor]:
        return [m for t in self.targets for m in t.masks]

    @torch.no_grad()
    def before_optimizer_step(self, step: int) -> None:
        """Feed gradients to the criterion when it needs them now; mask gradients while pruning."""
        sched, crit = self.schedule, self.criterion
        wanted = (crit.accumulates and step <= sched.end) or (crit.needs_grad and sched.prunes_at(step))
        weights = self.weights
        if wanted:
            grads = [w.grad if w.grad is not None else torch.zeros_like(w) for w in weights]
            crit.observe(weights, grads)
        if self.pruned_any and sched.active(step):
            mask_grads(weights, self.masks)

    @torch.no_grad()
    def update_masks(self, step: int) -> None:
        """Recompute the masks at a scheduled step: scores -> group scores -> pruned groups -> masks."""
        self.current = self.schedule.target(step, self.target)
        scores = iter(self.criterion.scores(self.weights))
        group_scores = [t.group_scores([next(scores) for _ in t.weights]) for t in self.targets]
        caps = [min(self.max_s, t.max_fraction) for t in self.targets]
        sizes = [t.group_size for t in self.targets]
        pruned = allocate(group_scores, sizes, self.current, self.domain, self.min_s, caps, self.blocks)
        for target, groups in zip(self.targets, pruned, strict=True):
            target.set_pruned(groups)
        self.pruned_any = True

    @torch.no_grad()
    def sparsity(self) -> float:
        """Achieved sparsity over this group's weights, counted from the weights themselves."""
        weights = self.weights
        return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)

    def state_dict(self) -> dict:
        """Masks (non-persistent buffers, so not in the model's state dict), scores and schedule position."""
        state = {"masks": self.masks, "criterion": self.criterion.state_dict()}
        return state | {"current": self.current, "pruned": self.pruned_any}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for mask, saved in zip(self.masks, state["masks"], strict=True):
            mask.copy_(saved)
        self.criterion.load_state_dict(state["criterion"], self.weights)
        self.current, self.pruned_any = state["current"], state["pruned"]

    def labels(self) -> dict[str, str]:
        return {name: label for t in self.targets for name, label in t.labels().items()}
