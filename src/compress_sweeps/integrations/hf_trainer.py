"""Drive the project's pruners, quantizers and distillers from inside `transformers.Trainer.train()`.

`CompressionCallback` maps the Trainer's events onto the six hooks of `compress_sweeps.hooks`:

    on_train_begin        -> attach(model, RunContext(total_steps=state.max_steps, ...))
    (Trainer's loss)      -> loss(outputs, batch, loss)          via `compute_loss_func=callback.compute_loss`
    on_pre_optimizer_step -> before_optimizer_step(step)         after gradient clipping, as in our Trainer
    on_step_end           -> after_optimizer_step(step)          after optimizer, scheduler and zero_grad
    on_log                -> metrics() merged into the training logs
    on_train_end          -> finalize(model)

Steps are 1-based optimizer steps, the same numbering as `compress_sweeps.trainer.Trainer`. A callback cannot
change the loss, so the Trainer must be built with `compute_loss_func=callback.compute_loss`; training stops with
an error at the first optimizer step if it was not. The batch inputs a distiller needs are captured by a forward
pre-hook on the model (the Trainer hands `compute_loss_func` only outputs and labels).

The Trainer creates its optimizer before `on_train_begin`. The pruners and quantizers here only change parameter
*values* (masks, shadow weights), never replace `nn.Parameter` objects, so the optimizer keeps training the right
tensors; parameters a compressor adds at attach (e.g. a multi-layer distiller's projections) are added to the
optimizer as a new group (no weight decay, the initial learning rate: the LR scheduler predates them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from compress_sweeps.hooks import Compressor, Compressors, RunContext, logits_of

DEFAULT_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
IGNORE_INDEX = -100  # label value the Trainer (and cross-entropy) skips


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labels that are not IGNORE_INDEX (sequence or token classification)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


class CompressionCallback(TrainerCallback):
    """Run `compressors` (a pruner, a quantizer, a distiller: any objects of the hook protocol) in a HF Trainer.

    Pass the callback *and* its loss to the Trainer:
    `Trainer(..., callbacks=[cb], compute_loss_func=cb.compute_loss)`. After `train()` the model is finalized
    (masks and fake-quant folded into plain weights); `cb.model` is the model `finalize` returned.

    `num_labels` defaults to `model.config.num_labels`, `input_keys` (the batch keys a teacher is fed) to the
    processing class's `model_input_names`. `train_set` (rows with `idx` and `labels`) is only needed by a teacher
    that is fine-tuned first; `cache_dir` is where such a teacher is kept. `task_loss(logits, labels)` is the
    hard-label loss the distiller weighs against its KD term (default: cross-entropy).
    """

    def __init__(
        self,
        *compressors: Compressor,
        num_labels: int | None = None,
        input_keys: Sequence[str] | None = None,
        train_set: Any = None,
        task_name: str = "",
        cache_dir: str | None = None,
        task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    ) -> None:
        self.compressors = Compressors(compressors)
        for spec in self.compressors.specs():
            if "idx" in spec.batch_keys:
                raise ValueError(
                    f"{spec.method} reads the example `idx` of each batch (distiller.cache_teacher=true looks teacher "
                    "outputs up by it), which the Trainer drops; set distiller.cache_teacher=false (the teacher then "
                    "runs live on every batch)"
                )
        self.num_labels, self.input_keys, self.train_set = num_labels, input_keys, train_set
        self.task_name, self.cache_dir, self.task_loss = task_name, cache_dir, task_loss
        self.model: nn.Module | None = None
        self.inputs: dict[str, Any] = {}  # keyword inputs of the model's latest forward call
        self.loss_calls = 0
        self._handle: Any = None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        processing_class: Any = None,
        optimizer: torch.optim.Optimizer | None = None,
        **kwargs: Any,
    ) -> None:
        if model is None or optimizer is None:
            raise RuntimeError("CompressionCallback needs the Trainer's model and optimizer at on_train_begin")
        num_labels = self.num_labels or getattr(getattr(model, "config", None), "num_labels", None)
        if num_labels is None:
            raise ValueError("CompressionCallback(num_labels=...) is needed for a model without config.num_labels")
        input_keys = self.input_keys or getattr(processing_class, "model_input_names", None) or DEFAULT_INPUT_KEYS
        context = RunContext(
            total_steps=state.max_steps,
            num_labels=num_labels,
            device=args.device,
            input_keys=tuple(input_keys),
            train_set=self.train_set,
            task_name=self.task_name,
            cache_dir=self.cache_dir,
        )
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self.compressors.attach(model, context)
        added = [p for p in model.parameters() if p.requires_grad and id(p) not in known]
        if added:
            optimizer.add_param_group({"params": added, "weight_decay": 0.0})
        self._handle = model.register_forward_pre_hook(self._capture, with_kwargs=True)
        self.model, self.loss_calls = model, 0

    def _capture(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self.inputs = kwargs

    def compute_loss(
        self, outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """The Trainer's `compute_loss_func`: task loss, then every compressor's `loss` hook while training.

        The Trainer treats a `compute_loss_func` loss as already scaled for gradient accumulation, so the batch
        mean is weighted by this batch's share of the `num_items_in_batch` labels of the whole accumulated step.
        Evaluation gets the plain task loss, as `compress_sweeps.trainer.Trainer.evaluate` reports it.
        """
        loss = self.task_loss(logits_of(outputs), labels)
        if self.model is None or not self.model.training:
            return loss
        self.loss_calls += 1
        loss = self.compressors.loss(outputs, {**self.inputs, "labels": labels}, loss)
        if num_items_in_batch is not None:
            loss = loss * (labels.ne(IGNORE_INDEX).sum() / num_items_in_batch)
        return loss

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.loss_calls == 0:
            raise RuntimeError(
                "CompressionCallback.compute_loss was never called: build the Trainer with "
                "compute_loss_func=callback.compute_loss, or the compressors' loss terms (KD) are silently missing"
            )
        self.compressors.before_optimizer_step(state.global_step + 1)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.compressors.after_optimizer_step(state.global_step)  # already counts the step that just ended

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Add `metrics()` to training logs (printed after us) and to the matching `state.log_history` row.

        Reporting integrations (`report_to`) run before user callbacks, so they do not see these keys.
        """
        training = self._handle is not None
        if not training or logs is None or any(key.startswith("eval_") for key in logs):
            return
        metrics = self.compressors.metrics()
        logs.update(metrics)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(metrics)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.inputs = {}
        if self.model is not None:
            self.model = self.compressors.finalize(self.model)
