"""Structured pruning that ends in a smaller dense model: heads, FFN neurons, blocks, conv channels."""

from compress_sweeps.pruners.slim.pruner import SlimPruner

__all__ = ["SlimPruner"]
