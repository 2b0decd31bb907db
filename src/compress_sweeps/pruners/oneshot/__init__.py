"""One-shot (post-training) pruning: magnitude, Wanda and SparseGPT on sequentially collected calibration data."""

from compress_sweeps.pruners.oneshot.magnitude import Magnitude
from compress_sweeps.pruners.oneshot.pruner import METHODS, OneShotPruner
from compress_sweeps.pruners.oneshot.sequential import calibrate_sequentially
from compress_sweeps.pruners.oneshot.sparsegpt import SparseGPT, sparsegpt_prune
from compress_sweeps.pruners.oneshot.wanda import Wanda, wanda_scores

__all__ = [
    "METHODS",
    "Magnitude",
    "OneShotPruner",
    "SparseGPT",
    "Wanda",
    "calibrate_sequentially",
    "sparsegpt_prune",
    "wanda_scores",
]
