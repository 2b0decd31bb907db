"""Structured units: what one pruning decision removes, as slices of parameters along one dimension.

A *unit group* is a set of interchangeable units of one layer (the heads of one attention block, the neurons of
one FFN, the output channels of one convolution with everything that depends on them). Each unit owns the same
number of positions along one dimension of every parameter in the group's *slices*: a head owns `head_dim` rows of
the query, key and value weights (and biases) and `head_dim` columns of the output projection; an FFN neuron owns
one row (+ bias) of the intermediate layer and one column of the output layer. Everything else follows from the
slices alone: a unit's score (the sum of its weights' scores), its keep-masks, its physical removal, and (costs.py)
what removing it saves in parameters or FLOPs.

Blocks (whole encoder layers) are not slices of a layer but entries of a `ModuleList`: `BlockUnits` holds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

KINDS = ("heads", "ffn", "blocks", "channels")
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)  # modules whose `weight` a criterion scores and FLOPs count


@dataclass
class Slice:
    """Positions `index[u]` along `dim` of the parameter `attr` of `module` belong to unit u."""

    module_name: str
    module: nn.Module
    attr: str  # "weight" | "bias"
    dim: int
    index: torch.Tensor  # [num_units, positions per unit], long

    @property
    def name(self) -> str:
        """The parameter's name in the model (as in its state dict)."""
        return f"{self.module_name}.{self.attr}" if self.module_name else self.attr

    @property
    def param(self) -> torch.Tensor:
        return self.module.get_parameter(self.attr)

    @property
    def scored(self) -> bool:
        """Whether a criterion scores this slice: the weights of Linear/Conv layers (not biases, not norms)."""
        return self.attr == "weight" and isinstance(self.module, WEIGHTED)


@dataclass
class UnitGroup:
    """The units of one layer; `pruned[u]` says whether unit u is removed (masks only grow: pruned stays pruned)."""

    kind: str
    name: str  # reported under this module name (self-attention, intermediate.dense, the root convolution)
    slices: list[Slice]
    scope: list[str]  # module names whose parameters and FLOPs form this group's part of the prunable whole
    block: int | None = None  # index of the encoder block holding this group, when blocks are units too
    min_kept: int = 1  # never below this many units (one head; a layer never vanishes unless its block does)
    pruned: torch.Tensor = field(default=None)  # type: ignore[assignment]
    owner: Any = None  # what removal needs: the self-attention module (head count), torch-pruning's group

    def __post_init__(self) -> None:
        if self.pruned is None:
            self.pruned = torch.zeros(self.num_units, dtype=torch.bool)

    @property
    def num_units(self) -> int:
        return self.slices[0].index.shape[0]

    @property
    def kept(self) -> int:
        return int((~self.pruned).sum())

    def scored_params(self) -> list[str]:
        return [s.name for s in self.slices if s.scored]

    @torch.no_grad()
    def unit_scores(self, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per unit: the sum of the scores of every weight it owns (in all the group's scored slices)."""
        total = torch.zeros(self.num_units, dtype=torch.float64)
        for s in self.slices:
            if not s.scored:
                continue
            score = scores[s.name].detach().movedim(s.dim, 0)
            picked = score[s.index.reshape(-1).to(score.device)].reshape(self.num_units, -1)
            total += picked.double().sum(dim=1).cpu()
        return total

    @torch.no_grad()
    def zero_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Zero the positions of the pruned units in the keep-masks of the group's parameters."""
        if not bool(self.pruned.any()):
            return
        for s in self.slices:
            mask = masks[s.name]
            mask.index_fill_(s.dim, s.index[self.pruned].reshape(-1).to(mask.device), 0)

    def kept_index(self, s: Slice) -> torch.Tensor:
        """Positions along `s.dim` that stay after removal: every position not owned by a pruned unit."""
        size = s.param.shape[s.dim]
        keep = torch.ones(size, dtype=torch.bool)
        keep[s.index[self.pruned].reshape(-1)] = False
        return keep.nonzero().squeeze(1)


@dataclass
class BlockUnits:
    """Whole blocks of a `ModuleList` (e.g. `bert.encoder.layer`); a removed block passes its input through."""

    prefix: str  # the ModuleList's name
    container: nn.ModuleList
    indices: list[int]  # the selected blocks (positions in the list)
    min_kept: int = 1  # never remove every block
    removed: torch.Tensor = field(default=None)  # type: ignore[assignment]
    cost: torch.Tensor = field(default=None)  # type: ignore[assignment]  # per block, in the target metric

    def __post_init__(self) -> None:
        if self.removed is None:
            self.removed = torch.zeros(len(self.indices), dtype=torch.bool)

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}.{i}" for i in self.indices]

    def scored_params(self, model_params: Mapping[str, torch.Tensor]) -> list[list[str]]:
        """Per block, the names of its Linear/Conv weights (the weights a criterion scores)."""
        per_block = []
        for i in self.indices:
            block = self.container[i]
            names = [f"{self.prefix}.{i}.{n}.weight" for n, m in block.named_modules() if isinstance(m, WEIGHTED)]
            per_block.append([n for n in names if n in model_params])
        return per_block


def block_of(name: str, blocks: BlockUnits | None) -> int | None:
    """Position in `blocks.indices` of the block holding module `name`, or None."""
    if blocks is None:
        return None
    for position, block in enumerate(blocks.names):
        if name == block or name.startswith(block + "."):
            return position
    return None


def unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


def add_mask(model: nn.Module, name: str) -> torch.Tensor:
    """The keep-mask buffer `<attr>_mask` beside parameter `name` (non-persistent: never in a state dict)."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    buffer = mask_name(attr)
    if buffer not in dict(module.named_buffers(recurse=False)):
        module.register_buffer(buffer, torch.ones_like(module.get_parameter(attr)), persistent=False)
    return module.get_buffer(buffer)


def mask_name(attr: str) -> str:
    """The keep-mask buffer of parameter `attr` (`weight_mask`, `bias_mask`)."""
    return f"{attr}_mask"


def remove_mask(model: nn.Module, name: str) -> None:
    """Drop the keep-mask buffer beside parameter `name`."""
    module_name, _, attr = name.rpartition(".")
    delattr(model.get_submodule(module_name), mask_name(attr))
