"""Weight pruning: criteria, patterns and schedules of the reference pruners behind the one hook protocol."""

from compress_sweeps.pruners.pattern_lock import PatternLock
from compress_sweeps.pruners.pruner import Pruner
from compress_sweeps.weights.patterns import parse_pattern

__all__ = ["PatternLock", "Pruner", "parse_pattern"]
