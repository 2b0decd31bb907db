"""Where a run's metrics go: Weights & Biases (`logger=wandb`) or nowhere (`logger=none`)."""

from compress_sweeps.loggers.base import NullLogger, RunLogger
from compress_sweeps.loggers.wandb_logger import WandbLogger

__all__ = ["NullLogger", "RunLogger", "WandbLogger"]
