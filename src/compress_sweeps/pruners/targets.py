"""What a pruner prunes: layers picked by a `LayerSelection`, each holding its keep-mask as a buffer.

A *target* owns one or more weights, cuts them into equal-sized groups (see weights/patterns/) and turns a vector of
pruned groups into keep-masks. Masks live on the module as the non-persistent buffer `weight_mask`, so they move
with `model.to(device)` and never leak into a saved state dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.weights.patterns import Pattern, as_matrix
from compress_sweeps.weights.selection import LayerSelection, weight_name

MASK = "weight_mask"


def add_mask(module: nn.Module) -> torch.Tensor:
    """Register (once) and return the all-ones keep-mask of `module.weight`."""
    if not hasattr(module, MASK):
        module.register_buffer(MASK, torch.ones_like(module.weight, dtype=module.weight.dtype), persistent=False)
    return getattr(module, MASK)


def remove_mask(module: nn.Module) -> None:
    if hasattr(module, MASK):
        delattr(module, MASK)


@torch.no_grad()
def mask_grads(weights: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> None:
    """Zero the gradients of masked weights (one foreach kernel for all layers); weights without a grad are skipped."""
    pairs = [(w.grad, m) for w, m in zip(weights, masks, strict=True) if w.grad is not None]
    if pairs:
        torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])


class LockedMasks:
    """Keep-masks held fixed while training on (one-shot pruning's recovery, PatternLock): the gradients of masked
    weights are zeroed before each optimizer step and the weights re-masked after it, so no pruned weight comes
    back; `finalize` folds the masks into exact zeros and drops the buffers. The masks are the checkpoint state.

    `modules` maps names to modules that already hold their keep-mask buffer (`add_mask`, or set at attach)."""

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self.modules = dict(modules)
        self.weights = [m.weight for m in self.modules.values()]
        self.masks = [m.get_buffer(MASK) for m in self.modules.values()]

    @torch.no_grad()
    def before_optimizer_step(self, step: int) -> None:
        mask_grads(self.weights, self.masks)

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        torch._foreach_mul_(self.weights, self.masks)

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> nn.Module:
        for module in self.modules.values():
            module.weight.mul_(module.get_buffer(MASK))
            remove_mask(module)
        return model

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        return {"masks": list(self.masks)}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Sequence[torch.Tensor]]) -> None:
        for mask, saved in zip(self.masks, state["masks"], strict=True):
            mask.copy_(saved)

    def sparsity(self) -> float:
        """The share of zeros in the locked weights, counted from the weights."""
        zeros = sum(int((w == 0).sum()) for w in self.weights)
        return zeros / max(sum(w.numel() for w in self.weights), 1)


class LayerTarget:
    """One Linear/Conv weight under an NxM, N:M or channel pattern."""

    def __init__(self, name: str, module: nn.Module, pattern: Pattern, reduce: str) -> None:
        self.name, self.pattern, self.reduce = name, pattern, reduce
        self.modules = [module]
        self.param_names = [weight_name(name)]
        self.weights = [module.weight]
        self.masks = [add_mask(module)]
        self.shape = tuple(as_matrix(module.weight).shape)
        self.group_size = pattern.group_size(self.shape)
        self.num_groups = module.weight.numel() // self.group_size
        self.max_fraction = pattern.max_fraction

    def labels(self) -> dict[str, str]:
        return {self.param_names[0]: self.pattern.label}

    @torch.no_grad()
    def group_scores(self, scores: Sequence[torch.Tensor]) -> torch.Tensor:
        # pruned groups score -inf: masks only grow, and an N:M run counts its pruned weights first
        return self.pattern.masked_group_scores(as_matrix(scores[0]).float(), as_matrix(self.masks[0]), self.reduce)

    @torch.no_grad()
    def set_pruned(self, pruned: torch.Tensor) -> None:
        self.pattern.write_mask(as_matrix(self.masks[0]), pruned)


def select_layers(
    model: nn.Module,
    selection: LayerSelection,
    pattern: Pattern,
    reduce: str,
    skip_incompatible: bool,
    taken: set[str],
) -> tuple[list[LayerTarget], list[str]]:
    """Targets for the selected layers, and the names of layers skipped because the pattern does not fit them.

    A layer whose shape does not fit the pattern is an error naming it, unless `skip_incompatible` is set.
    """
    key = selection.key
    targets, skipped = [], []
    for name, module in selection.select(model, required=False).items():
        if name in taken:
            raise ConfigError(
                f"{key}include",
                list(selection.include),
                "must be disjoint from the other groups' layers",
                f"takes layer '{name}' again",
            )
        problem = pattern.problem(tuple(as_matrix(module.weight).shape))
        if problem:
            if not skip_incompatible:
                raise ConfigError(
                    f"{key}pattern",
                    pattern.label,
                    f"must divide every selected layer ({problem}); exclude the layer ({key}exclude) or set "
                    f"{key}skip_incompatible=true",
                    problem=f"does not fit layer '{name}'",
                )
            skipped.append(name)
            continue
        taken.add(name)
        targets.append(LayerTarget(name, module, pattern, reduce))
    return targets, skipped
