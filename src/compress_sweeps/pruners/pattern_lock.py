"""`PatternLock`: keep the zeros of an already pruned model fixed while it is trained further.

For Prune-Once-for-All (prune upstream, then fine-tune or distil downstream) and for quantization-aware training
after pruning: at attach, every selected weight's current zeros become its mask; gradients of locked weights are
masked before each optimizer step and weights re-masked after it, so no zero is ever revived. Non-zero weights
train freely (they may still become zero by chance; they are not locked then).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.pruners.targets import MASK, LockedMasks
from compress_sweeps.schema import Regexes
from compress_sweeps.spec import CompressionSpec, SparsityPromise
from compress_sweeps.weights.selection import DEFAULT_EXCLUDE, DEFAULT_LAYER_TYPES, LayerSelection, weight_name


class PatternLock:
    """Lock the zero pattern of the Linear/Conv weights picked by `layer_types`, `include` and `exclude`."""

    def __init__(
        self,
        layer_types: Sequence[str] = DEFAULT_LAYER_TYPES,
        include: Regexes = (),
        exclude: Regexes = DEFAULT_EXCLUDE,
    ) -> None:
        self.selection = LayerSelection(layer_types, include, exclude, "pruner.")
        self.locked = LockedMasks({})

    @torch.no_grad()
    def attach(self, model: nn.Module, context: RunContext) -> None:
        layers = self.selection.select(model)
        if not any(bool((module.weight == 0).any()) for module in layers.values()):
            raise ConfigError(
                "pruner",
                "pattern_lock",
                "must start from a pruned model (model=from_run model.folder=<a pruned run>): the selected layers "
                f"({', '.join(list(layers)[:3])}{', ...' if len(layers) > 3 else ''}) hold no zero weights",
                problem="finds nothing to lock",
            )
        for module in layers.values():
            module.register_buffer(MASK, (module.weight != 0).to(module.weight.dtype), persistent=False)
        self.locked = LockedMasks({weight_name(name): module for name, module in layers.items()})

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        return loss

    def before_optimizer_step(self, step: int) -> None:
        self.locked.before_optimizer_step(step)

    def after_optimizer_step(self, step: int) -> None:
        self.locked.after_optimizer_step(step)

    def state_dict(self) -> dict[str, Any]:
        """The locked masks (taken at attach; kept so a resumed run never re-derives them from trained weights)."""
        return self.locked.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.locked.load_state_dict(state)

    def finalize(self, model: nn.Module) -> nn.Module:
        return self.locked.finalize(model)

    def spec(self) -> CompressionSpec:
        """The zeros found at attach stay: no target of its own, and zeros are kept."""
        patterns = {name: "1x1" for name in self.locked.modules}
        return CompressionSpec(method="PatternLock", sparsity=(SparsityPromise(patterns, None),), keeps_zeros=True)

    def check(self, total_steps: int, how: str = "") -> None:
        pass

    def metrics(self) -> dict[str, float]:
        """Sparsity of the locked weights, counted from the weights."""
        return {"pruner/sparsity": self.locked.sparsity()} if self.locked.modules else {}
