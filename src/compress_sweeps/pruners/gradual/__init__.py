"""Gradual pruning: masks scored by a criterion and updated on a schedule while training (`Pruner`, one or several
groups; global, local or uniform allocation; weight patterns or attention heads), and Discovering Neural Wirings,
the same pruner with straight-through gradients to the pruned weights (`NeuralWiring`)."""

from compress_sweeps.pruners.gradual.neural_wiring import NeuralWiring
from compress_sweeps.pruners.gradual.pruner import Pruner

__all__ = ["NeuralWiring", "Pruner"]
