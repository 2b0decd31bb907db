"""Weight pruning: criteria, patterns and schedules of the reference pruners behind the one hook protocol."""

from compress_sweeps.pruners.pattern_lock import PatternLock
from compress_sweeps.pruners.patterns import parse_pattern
from compress_sweeps.pruners.pruner import Pruner

__all__ = ["PatternLock", "Pruner", "parse_pattern"]
