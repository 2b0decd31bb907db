"""The multirun side, as Hydra callbacks and helpers: every grid point checked before launch, the end-of-sweep
summary of this launch's jobs, and the equivalent W&B sweep configuration."""

from compress_sweeps.sweeps.summary import SweepSummary, summarize

__all__ = ["SweepSummary", "summarize"]
