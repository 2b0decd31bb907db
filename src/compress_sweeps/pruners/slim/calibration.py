"""Gradients before the first optimizer step: what a gradient criterion scores a one-shot cut at attach on.

`calibration_gradients` runs forward and backward passes of the task loss (the run's objective: cross-entropy on
the class logits, or a causal LM's next-token loss, as the training loop computes it) over training examples drawn
by `seed` (`tasks/sample.py`, the draw every calibration of the project uses), with dropout off, and returns one
gradient per scored weight for each batch: the criterion observes them as it would observe the gradients of that
many training steps, so an accumulating criterion (snip_momentum) averages them. No optimizer step is taken and no
gradient is left on the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from compress_sweeps.batching import loader
from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext, logits_of
from compress_sweeps.tasks.sample import calibration_indices


def calibration_gradients(
    model: nn.Module,
    weights: Sequence[torch.Tensor],
    context: RunContext,
    batches: int,
    batch_size: int,
    seed: int,
) -> Iterator[list[torch.Tensor]]:
    """The gradients of `weights` on each of `batches` calibration batches (a generator: one batch at a time)."""
    if batches == 0:
        raise ConfigError(
            "pruner.calibration_batches",
            0,
            "must be >= 1 when a gradient criterion prunes at step 0 (there is no gradient before training)",
            problem="gives no gradient",
        )
    if context.train_set is None or len(context.train_set) == 0:
        raise ConfigError(
            "pruner.calibration_batches", batches, "needs the run's training split", problem="has no examples"
        )
    indices = calibration_indices(len(context.train_set), batches * batch_size, seed)
    was_training = model.training
    model.eval()  # scores of the model as it is, not of a dropout sample
    try:
        for batch in loader(context.train_set, batch_size, sampler=indices):
            batch = {k: v.to(context.device) for k, v in batch.items()}
            outputs = model(**{k: batch[k] for k in context.input_keys if k in batch})
            loss = context.objective.loss(logits_of(outputs), batch["labels"])
            grads = torch.autograd.grad(loss, list(weights))
            yield [g.detach() for g in grads]
    finally:
        model.train(was_training)
