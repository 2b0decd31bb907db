"""The one hook protocol through which pruning, quantization and distillation plug into the training loop.

A method never owns the loop: the trainer calls these six hooks at fixed points, so any combination of a pruner,
a quantizer and a distiller composes in one run (prune + KD + QAT = Prune-Once-for-All).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass(frozen=True)
class RunContext:
    """What a compressor may need to know about the run when it attaches (grows without changing signatures)."""

    total_steps: int  # optimizer steps of the whole run (gradient accumulation already counted)
    num_labels: int
    device: torch.device
    input_keys: Sequence[str] = ()  # batch keys the model takes (the rest: labels, idx)
    train_set: Any = None  # the encoded training split (rows are dicts of tensors with `idx`)
    task_name: str = ""
    cache_dir: str | None = None  # where a method may keep on-disk caches (e.g. teacher outputs)
    extras: dict = field(default_factory=dict)


@runtime_checkable
class Compressor(Protocol):
    """What every pruner, quantizer and distiller implements (`none` included)."""

    def attach(self, model: nn.Module, context: RunContext) -> None:
        """Wrap or swap modules, select layers, build masks; `model` is already on `context.device`."""

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        """Return the training loss; distillers add their term, other methods pass `loss` through."""

    def before_optimizer_step(self, step: int) -> None:
        """Called after backward, before `optimizer.step()`: accumulate scores, mask gradients."""

    def after_optimizer_step(self, step: int) -> None:
        """Called after `optimizer.step()`: update masks on schedule, re-apply masks, update observers."""

    def finalize(self, model: nn.Module) -> nn.Module:
        """Fold masks / fake-quant into plain weights and remove wrappers; return the plain model."""

    def metrics(self) -> dict[str, float]:
        """What this method wants logged now (targets, achieved sparsity, bits, KD loss terms...)."""


class Passthrough:
    """The `none` choice of the pruner, quantizer and distiller groups: every hook does nothing."""

    def attach(self, model: nn.Module, context: RunContext) -> None:
        pass

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        return loss

    def before_optimizer_step(self, step: int) -> None:
        pass

    def after_optimizer_step(self, step: int) -> None:
        pass

    def finalize(self, model: nn.Module) -> nn.Module:
        return model

    def metrics(self) -> dict[str, float]:
        return {}


class Compressors:
    """Several compressors driven as one, in a fixed order (pruner, quantizer, distiller)."""

    def __init__(self, members: Iterable[Compressor]) -> None:
        self.members = [m for m in members if not isinstance(m, Passthrough)]
        for member in self.members:
            if not isinstance(member, Compressor):
                raise TypeError(f"{type(member).__name__} does not implement the Compressor hook protocol")

    def attach(self, model: nn.Module, context: RunContext) -> None:
        for member in self.members:
            member.attach(model, context)

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        for member in self.members:
            loss = member.loss(outputs, batch, loss)
        return loss

    def before_optimizer_step(self, step: int) -> None:
        for member in self.members:
            member.before_optimizer_step(step)

    def after_optimizer_step(self, step: int) -> None:
        for member in self.members:
            member.after_optimizer_step(step)

    def finalize(self, model: nn.Module) -> nn.Module:
        for member in self.members:
            model = member.finalize(model)
        return model

    def metrics(self) -> dict[str, float]:
        merged: dict[str, float] = {}
        for member in self.members:
            merged.update(member.metrics())
        return merged
