"""Which parameters of a built model still hold their random initialisation: what a builder knows and the run asks.

A pretrained encoder given a classification head for this task's labels has a head drawn at random; a network
built from scratch (the CNN) is random throughout. Post-training methods (one-shot pruning, an evaluation at
`trainer.max_steps=0`) preserve or measure what a model computes, which is nothing yet for such parameters. The
builders record the names here when they create a model; loading saved weights (`from_run`, and so a model
fine-tuned once) clears them. `train.run` puts `untrained_parameters(model)` into the typed
`RunContext.untrained`, which is where methods read it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

from torch import nn

_UNTRAINED: weakref.WeakKeyDictionary[nn.Module, tuple[str, ...]] = weakref.WeakKeyDictionary()


def untrained_parameters(model: nn.Module) -> tuple[str, ...]:
    """Names of the parameters of `model` its builder initialised at random (e.g. `classifier.weight` of a
    pretrained encoder with a new head); empty when all were loaded or trained, or the model was built elsewhere."""
    return _UNTRAINED.get(model, ())


def mark_untrained(model: nn.Module, names: Iterable[str]) -> None:
    """Record that `names` of `model` hold random initial values (none: forget the model)."""
    names = tuple(sorted(names))
    if names:
        _UNTRAINED[model] = names
    else:
        _UNTRAINED.pop(model, None)


def mark_trained(model: nn.Module) -> None:
    """Every parameter of `model` now holds loaded or trained values."""
    _UNTRAINED.pop(model, None)
