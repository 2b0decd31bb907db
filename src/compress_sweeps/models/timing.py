"""Latency you can trust: models timed interleaved in one process, so load from other processes hits them alike.

Every speed figure the project reports is a ratio against a reference timed beside it (the dense model of the same
architecture, rebuilt in the same process); the absolute milliseconds are kept with the batch, the threads and
the machine they were taken on, and are never compared across runs.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.inference_mode()
def interleaved_ms(
    models: Mapping[str, Callable[..., Any]], inputs: Mapping[str, torch.Tensor], repeats: int = 10, warmup: int = 2
) -> dict[str, float]:
    """Median forward time (ms) of each model on the same `inputs`; every repeat runs each model once, the order
    rotating, so neither always runs on a warm cache or right after the other."""
    names = list(models)
    for model in models.values():
        if isinstance(model, torch.nn.Module):
            model.eval()
        for _ in range(warmup):  # weight packing, allocator, ONNX Runtime's first run
            model(**inputs)
    timings: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            _sync()
            start = time.perf_counter()
            models[name](**inputs)
            _sync()
            timings[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in timings.items()}


def machine(device: torch.device | None = None) -> str:
    """The processor the times were taken on: the GPU's name, else the CPU model string."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def conditions(device: torch.device | None = None) -> dict[str, Any]:
    """Threads, machine and load average: the label every absolute time carries."""
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on every platform
        load = None
    return {"threads": torch.get_num_threads(), "machine": machine(device), "load_average": load}
