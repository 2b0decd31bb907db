"""Weight pruning behind the one hook protocol, one folder per family: `gradual/` (masks scored and updated on a
schedule while training: `Pruner`, `NeuralWiring`), `oneshot/` (post-training, at attach: magnitude, Wanda,
SparseGPT, RIA), `slim/` (whole heads, neurons, blocks and channels cut out); `PatternLock` keeps a pruned model's
zeros. Shared by the families: the criteria (criteria.py), schedules (schedules.py) and the masked targets with
their locked-mask hooks (targets.py)."""

from compress_sweeps.pruners.gradual import NeuralWiring, Pruner
from compress_sweeps.pruners.pattern_lock import PatternLock
from compress_sweeps.weights.patterns import parse_pattern

__all__ = ["NeuralWiring", "PatternLock", "Pruner", "parse_pattern"]
