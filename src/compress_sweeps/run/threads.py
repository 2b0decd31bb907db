"""How many torch threads a job uses, so parallel jobs share the cores instead of fighting over them."""

from __future__ import annotations

import os

import torch
from hydra.core.hydra_config import HydraConfig


def parallel_jobs() -> int:
    """Jobs that run at once on this machine: the joblib launcher's n_jobs, else 1."""
    if not HydraConfig.initialized():
        return 1
    launcher = HydraConfig.get().launcher
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = launcher.get("n_jobs") or -1
    return os.cpu_count() or 1 if n_jobs < 0 else n_jobs


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads: `threads`, or (cores // parallel jobs) when null; return the number used."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or null (automatic), got {threads}")
    if threads is None:
        jobs = parallel_jobs()
        threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else torch.get_num_threads()
    torch.set_num_threads(threads)
    return threads
