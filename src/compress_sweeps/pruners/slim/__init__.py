"""Structured pruning that ends in a smaller dense model: heads, FFN neurons, blocks, conv channels."""

from compress_sweeps.pruners.slim.pruner import SlimPruner
from compress_sweeps.pruners.slim.structure import STRUCTURE, apply_structure, load_structure, save_structure

__all__ = ["STRUCTURE", "SlimPruner", "apply_structure", "load_structure", "save_structure"]
