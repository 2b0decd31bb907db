"""The one training loop: AdamW, warmup + decay, gradient accumulation, periodic evaluation, compressor hooks."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Literal

import torch
from pydantic import AfterValidator, Field
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm
from transformers import get_scheduler

from compress_sweeps import batching, distributed
from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import Compressors, RunContext, logits_of
from compress_sweeps.loggers.base import RunLogger
from compress_sweeps.objectives import CLASSIFICATION, Objective
from compress_sweeps.run.checkpoint import Checkpoints, EpochBatches, TrainingState
from compress_sweeps.run.identity import TRAINER_FREE
from compress_sweeps.run.threads import parallel_jobs
from compress_sweeps.schema import Words, check_arguments

log = logging.getLogger(__name__)
FUSED_ADAMW = ("cpu", "cuda")  # devices with torch's fused AdamW kernel: one pass over the weights, not several


def usable_device(device: str) -> str:
    """`device` if torch knows it and this machine can train on it; else a ValueError saying why (the schema's
    validator of `Device`: checked with every other value, before anything loads)."""
    if device == "auto":
        return device
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"torch knows no device '{device}'") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if parsed.type not in available:
        raise ValueError(f"no model trains on a '{parsed.type}' device")
    if not available[parsed.type]:
        raise ValueError(f"{parsed.type} is not available on this machine: use auto or cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"this machine has {torch.cuda.device_count()} CUDA device(s), from cuda:0")
    return device


# a device to train on: torch must know it and this machine must have it
Device = Annotated[
    str,
    AfterValidator(usable_device),
    Words("auto | cpu | cuda | cuda:<index> | mps", "devices", "is not a usable device"),
]


def resolve_device(device: str) -> torch.device:
    """The torch device of `trainer.device` (checked by `usable_device` with the trainer's other values)."""
    if device == "auto":
        return distributed.local_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return distributed.local_device(torch.device(device))


class Trainer:
    """Fine-tune `model` for a number of optimizer steps, given either as `max_steps` or as `epochs`.

    Steps are the one unit inside: `epochs` is converted to optimizer steps, counting `grad_accum_steps`
    micro-batches of `batch_size` per step. Compressors see every optimizer step through their hooks.
    `max_steps=0` (trainer=none) trains nothing: the compressors attach (a one-shot pruner calibrates and prunes
    there) and the run goes on to finalize, evaluation and export.
    """

    def __init__(
        self,
        max_steps: Annotated[int, Field(ge=0)] | None = 300,
        epochs: Annotated[float, Field(gt=0)] | None = None,
        batch_size: Annotated[int, Field(ge=1)] = 16,
        grad_accum_steps: Annotated[int, Field(ge=1)] = 1,
        eval_batch_size: Annotated[int, Field(ge=1)] = 64,
        lr: Annotated[float, Field(gt=0)] = 5e-5,
        weight_decay: Annotated[float, Field(ge=0)] = 0.01,
        warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.1,
        lr_schedule: Literal["linear", "cosine", "constant_with_warmup"] = "linear",
        max_grad_norm: Annotated[float, Field(gt=0)] | None = 1.0,
        eval_every: Annotated[int, Field(ge=1)] | None = 100,
        eval_max_batches: Annotated[int, Field(ge=1)] | None = None,
        log_every: Annotated[int, Field(ge=1)] = 10,
        checkpoint_every: Annotated[int, Field(ge=1)] | None = 50,
        device: Device = "auto",
        progress: bool = True,
        group_by_length: bool = False,
    ) -> None:
        arguments = {k: v for k, v in locals().items() if k != "self"}
        check_arguments(Trainer, arguments, "trainer.")  # the signature is the schema, also for Python callers
        if (max_steps is None) == (epochs is None):
            raise ConfigError(
                "trainer.max_steps",
                max_steps,
                f"must be set when trainer.epochs is null and null when it is set "
                f"(trainer.epochs={'null' if epochs is None else epochs})",
                problem="clashes with trainer.epochs",
            )
        self.max_steps, self.epochs, self.batch_size = max_steps, epochs, batch_size
        self.grad_accum_steps, self.eval_batch_size = grad_accum_steps, eval_batch_size
        self.lr, self.weight_decay, self.warmup_ratio, self.lr_schedule = lr, weight_decay, warmup_ratio, lr_schedule
        self.max_grad_norm, self.eval_every, self.eval_max_batches = max_grad_norm, eval_every, eval_max_batches
        self.log_every, self.progress, self.checkpoint_every = log_every, progress, checkpoint_every
        self.group_by_length = group_by_length
        self.device = resolve_device(device)

    def settings(self) -> dict[str, object]:
        """The settings that decide the trained result (a fine-tuned teacher's cache key): all but the progress bar
        and the checkpoint cadence (run/identity.py)."""
        return {k: str(v) if k == "device" else v for k, v in vars(self).items() if k not in TRAINER_FREE}

    def total_steps(self, train_size: int) -> int:
        """Optimizer steps of the run: `max_steps`, or `epochs` worth of accumulated batches (of all processes)."""
        if self.max_steps is not None:
            return self.max_steps
        batches = math.ceil(train_size / (self.batch_size * distributed.world_size()))
        return max(1, math.ceil(self.epochs * batches / self.grad_accum_steps))

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        # no weight decay on biases and normalisation weights, as in BERT fine-tuning
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.lr, fused=self.device.type in FUSED_ADAMW)

    def _sampler(self, dataset: Dataset, generator: torch.Generator) -> Sampler[int]:
        """One epoch's order: a shuffle, or with `group_by_length` batches of similar lengths (this process's shard
        of it if distributed). Drawn from `generator` alone, so a checkpoint's generator state replays it."""
        if not self.group_by_length:
            return distributed.shuffled(dataset, generator)
        return batching.length_grouped(dataset, self.batch_size * self.grad_accum_steps, generator)

    def _batches(self, dataset: Dataset, generator: torch.Generator) -> EpochBatches:
        """Shuffled micro-batches forever (a new order each epoch), each padded to its longest example, resumable
        from a checkpoint."""
        self._sampler(dataset, generator)  # a task that cannot be grouped by length fails now, not at step 1

        def loader(epoch: int) -> DataLoader:
            return batching.loader(dataset, self.batch_size, self._sampler(dataset, generator), generator)

        return EpochBatches(loader, generator)

    def fit(
        self,
        model: nn.Module,
        train_set: Dataset,
        eval_set: Dataset,
        compressors: Compressors,
        context: RunContext,
        logger: RunLogger,
        seed: int = 0,
        checkpoints: Checkpoints | None = None,
    ) -> dict[str, float]:
        """Attach the compressors, train, evaluate every `eval_every` steps; return the last eval metrics.

        With `checkpoints`, continue from the run folder's checkpoint if it holds one, and save one when it is due.
        """
        total, input_keys = context.total_steps, context.input_keys
        batches = self._batches(train_set, torch.Generator().manual_seed(seed))
        model.to(self.device).train()
        resumes_from = checkpoints.pending() if checkpoints is not None else None
        compressors.attach(model, replace(context, resumes_from=resumes_from))
        if total == 0:  # calibrate and compress only: no optimizer, no batches
            if context.untrained:
                log.warning(
                    "trainer.max_steps=0 evaluates the model as built, and its %s hold their random initialisation: "
                    "start from a trained model (model=finetuned or model=from_run)",
                    ", ".join(context.untrained[:3]) + (", ..." if len(context.untrained) > 3 else ""),
                )
            return {}
        net = distributed.wrap(model, self.device)  # after attach: the compressors see the plain model
        optimizer = self._optimizer(model)
        scheduler = get_scheduler(self.lr_schedule, optimizer, int(self.warmup_ratio * total), total)
        training = TrainingState(model, optimizer, scheduler, batches, compressors)
        start = checkpoints.resume(training) if checkpoints is not None else 0
        bar = tqdm(
            total=total,
            initial=start,
            desc="train",
            unit="step",
            # jobs in parallel processes (joblib) would interleave their bars into one line: they log eval lines only
            disable=not self.progress or not distributed.is_main() or parallel_jobs() > 1,
            dynamic_ncols=True,
        )
        metrics: dict[str, float] = {}
        running, since_log, seen, started = 0.0, 0, 0, time.perf_counter()
        for step in range(start + 1, total + 1):
            for _ in range(self.grad_accum_steps):
                batch = {k: v.to(self.device) for k, v in next(batches).items()}
                outputs = net(**{k: batch[k] for k in input_keys if k in batch})
                loss = context.objective.loss(logits_of(outputs), batch["labels"])
                loss = compressors.loss(outputs, batch, loss)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss is {loss.item()} at optimizer step {step}; stopping")
                (loss / self.grad_accum_steps).backward()
                running += loss.item() / self.grad_accum_steps
                seen += len(batch["labels"])
            since_log += 1
            if self.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), self.max_grad_norm)
            compressors.before_optimizer_step(step)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            compressors.after_optimizer_step(step)
            bar.update()
            if step % self.log_every == 0 or step == total:
                rate = seen / (time.perf_counter() - started)
                row = {"train/loss": running / since_log, "train/lr": scheduler.get_last_lr()[0]}
                row["train/examples_per_s"] = rate
                bar.set_postfix(loss=f"{row['train/loss']:.4f}", lr=f"{row['train/lr']:.2e}", ex_s=f"{rate:.1f}")
                logger.log(row | compressors.metrics(), step=step)
                running, since_log = 0.0, 0
            if self.eval_every and step % self.eval_every == 0 and step < total:
                metrics = self.evaluate(model, eval_set, input_keys, context.objective)
                log.info("step %d: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
                logger.log(metrics, step=step)
                model.train()
            saving = checkpoints is not None and self.checkpoint_every and step % self.checkpoint_every == 0
            if saving and distributed.is_main():  # ranks hold the same weights and masks; one file
                checkpoints.save(step, training)
        bar.close()
        distributed.sync_running_stats(model)
        return metrics

    def evaluate(
        self, model: nn.Module, eval_set: Dataset, input_keys: Sequence[str], objective: Objective = CLASSIFICATION
    ) -> dict[str, float]:
        """The objective's metrics (accuracy, macro-F1 and mean cross-entropy of a classifier; perplexity of a causal
        LM) on (the first `eval_max_batches` batches of) `eval_set`.

        In a distributed run rank 0 evaluates and every rank returns its numbers.
        """
        distributed.sync_running_stats(model)
        model.to(self.device).eval()
        return distributed.on_rank_zero(self._evaluate, model, eval_set, input_keys, objective)

    @torch.no_grad()
    def _evaluate(
        self, model: nn.Module, eval_set: Dataset, input_keys: Sequence[str], objective: Objective
    ) -> dict[str, float]:
        def batches():
            for i, batch in enumerate(batching.loader(eval_set, self.eval_batch_size)):
                if self.eval_max_batches is not None and i >= self.eval_max_batches:
                    break
                batch = {k: v.to(self.device) for k, v in batch.items()}
                yield logits_of(model(**{k: batch[k] for k in input_keys if k in batch})), batch["labels"]

        return objective.scores(batches())
