"""One-shot (post-training) pruning: `OneShotPruner` runs a `OneShotMethod` (magnitude, Wanda, SparseGPT: each its
own `pruner/method` config) on sequentially collected calibration data."""

from compress_sweeps.pruners.oneshot.magnitude import Magnitude
from compress_sweeps.pruners.oneshot.method import Goal, OneShotMethod
from compress_sweeps.pruners.oneshot.pruner import OneShotPruner
from compress_sweeps.pruners.oneshot.sequential import calibrate_sequentially
from compress_sweeps.pruners.oneshot.sparsegpt import SparseGPT, sparsegpt_prune
from compress_sweeps.pruners.oneshot.wanda import Wanda, wanda_scores

__all__ = [
    "Goal",
    "Magnitude",
    "OneShotMethod",
    "OneShotPruner",
    "SparseGPT",
    "Wanda",
    "calibrate_sequentially",
    "sparsegpt_prune",
    "wanda_scores",
]
