"""The one hook protocol through which pruning, quantization and distillation plug into the training loop.

A method never owns the loop: the trainer calls these six hooks at fixed points, so any combination of a pruner,
a quantizer and a distiller composes in one run (prune + KD + QAT = Prune-Once-for-All).

Outside the six hooks a method describes itself through two optional protocols, and every other module asks it
through them instead of inspecting it:
- `Stateful` (`state_dict` / `load_state_dict`): Python-side state (masks in non-persistent buffers, running scores,
  observer ranges, shadow weights, its own optimizer or generator) that a checkpoint saves and restores. State held
  in the model's parameters, persistent buffers or submodules is already in `model.state_dict()`.
- `Describes` (`spec()` / `check(total_steps, how)`): what it promises about the finalized weights (`spec.py`),
  which results.json records and `verify` checks, and the checks that need the run's length (schedules).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from compress_sweeps.objectives import CLASSIFICATION, Objective
from compress_sweeps.spec import CompressionSpec


def logits_of(outputs: Any) -> torch.Tensor:
    """Hugging Face models return an output object with `.logits`; plain nets return the logits tensor."""
    return outputs.logits if hasattr(outputs, "logits") else outputs


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
    eval_set: Any = None  # the encoded validation split (e.g. to report a teacher's accuracy); None if unknown
    extras: dict = field(default_factory=dict)
    # parameters of the model that still hold their random initialisation (a pretrained encoder's new classification
    # head; every parameter of a network built from scratch); empty once trained or loaded (models.untrained_parameters)
    untrained: tuple[str, ...] = ()
    # the checkpoint step this fit continues from, or None: the model's weights and every `Stateful` method's state
    # are restored right after `attach`, so attach may skip work whose result the checkpoint holds (calibration)
    resumes_from: int | None = None
    # what the task's model predicts and is trained on: the loss of a batch, the evaluation metrics (objectives.py)
    objective: Objective = CLASSIFICATION


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


@runtime_checkable
class Stateful(Protocol):
    """Optional, outside the hook protocol (like torch's `Stateful`): what a checkpoint saves and restores.

    `state_dict` returns tensors and plain Python values (a checkpoint loads with `weights_only=True`);
    `load_state_dict` is called after `attach` and after the model's own state dict was loaded, so it may copy
    into the buffers and parameters `attach` set up. Tensors may come back on the CPU: move them where they live.
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Describes(Protocol):
    """Optional, outside the hook protocol: a method that says what it promises (see spec.py).

    `spec()` may be called before `attach` (weight lists empty then) and after `finalize` (the weights it touched).
    `check(total_steps, how)` raises `ConfigError` when a setting cannot work in a run of `total_steps` optimizer
    steps (`how` says how they were counted, e.g. `trainer.max_steps=300`); it needs no model and no data.
    """

    def spec(self) -> CompressionSpec: ...

    def check(self, total_steps: int, how: str = "") -> None: ...


@runtime_checkable
class FineTuner(Protocol):
    """A training loop a method is handed to train a model of its own (a teacher fine-tuned once on the task):
    `compress_sweeps.trainer.Trainer`, built from a `trainer` config inside the method's config. Methods use it
    through this protocol and never import the training loop."""

    def total_steps(self, train_size: int) -> int: ...

    def fit(
        self,
        model: nn.Module,
        train_set: Any,
        eval_set: Any,
        compressors: Compressors,
        context: RunContext,
        logger: Any,
        seed: int = 0,
    ) -> dict[str, float]: ...

    def settings(self) -> dict[str, Any]:
        """What decides the trained result (for cache keys): not progress bars, checkpoint cadence or device."""
        ...


class TrainingNoOps:
    """Every training hook does nothing: the base of a compressor that changes nothing while the model trains."""

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


class Passthrough(TrainingNoOps):
    """The `none` choice of the pruner, quantizer and distiller groups: every hook does nothing (and `Compressors`
    leaves it out)."""


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

    def specs(self) -> list[CompressionSpec]:
        """The specs of the members that describe themselves, in order."""
        return [m.spec() for m in self.members if isinstance(m, Describes)]

    def check(self, total_steps: int, how: str = "") -> None:
        """Every describing member's checks against the run's length."""
        for member in self.members:
            if isinstance(member, Describes):
                member.check(total_steps, how)

    def state_dict(self) -> dict[str, Any]:
        """{'<position>.<class name>': state} of the `Stateful` members."""
        return {key: member.state_dict() for key, member in self._stateful().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        members = self._stateful()
        if set(state) != set(members):
            raise ValueError(f"the checkpoint holds compressors {sorted(state)}, this run has {sorted(members)}")
        for key, member in members.items():
            member.load_state_dict(state[key])

    def _stateful(self) -> dict[str, Stateful]:
        return {f"{i}.{type(m).__name__}": m for i, m in enumerate(self.members) if isinstance(m, Stateful)}
