"""Latency you can trust: models timed interleaved in one process, so load from other processes hits them alike.

Every speed figure the project reports is a ratio against a reference timed beside it (the dense model of the same
architecture, rebuilt in the same process); the absolute milliseconds are kept with the batch, the threads and
the machine they were taken on, and are never compared across runs.

Every timing starts from the same memory-allocator state (`steady_allocator`): with glibc's malloc, how often a
model's buffers are returned to the OS and faulted in again on the next call depends on the largest block freed
earlier in the process, and for a small model that is a large share of its time: the slim CNN of
bench/slim_latency.py timed 0.45x its dense model in a fresh process and 0.64x after MiniLM had run in it.
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


# glibc raises its mmap threshold to the size of a freed mmap-ed block up to 32 MiB (and its trim threshold to twice
# that): one block just under the cap puts any process in the state the largest earlier allocation would have
_STEADY_BLOCK_BYTES = 30 * 2**20


def steady_allocator() -> None:
    """Bring the allocator to the state a long-running process reaches once it freed any large tensor (glibc:
    buffers up to ~30 MiB are reused, not unmapped and faulted in again), whatever ran before. Elsewhere a no-op
    in effect."""
    block = torch.empty(_STEADY_BLOCK_BYTES, dtype=torch.uint8)
    del block


@torch.inference_mode()
def interleaved_ms(
    models: Mapping[str, Callable[..., Any]], inputs: Mapping[str, torch.Tensor], repeats: int = 10, warmup: int = 2
) -> dict[str, float]:
    """Median forward time (ms) of each model on the same `inputs`; every repeat times each model once, the order
    rotating, so load from elsewhere hits them alike; from the steady allocator state.

    Each timed call comes right after an untimed call of the same model: it measures the model served back to
    back, not the switch from the model before it. That switch is not the same for every model: counted per
    transition (2,000 calls in random order of bench/slim_latency.py's small CNN, dense and slim, in PyTorch and
    ONNX Runtime), the slim ONNX Runtime session took 0.77-0.81 ms right after a PyTorch model and 0.64-0.68 ms
    after an ONNX Runtime one, and the PyTorch models 7-18% longer after ONNX Runtime than after PyTorch."""
    steady_allocator()
    names = list(models)
    for model in models.values():
        if isinstance(model, torch.nn.Module):
            model.eval()
        for _ in range(warmup):  # weight packing, allocator, ONNX Runtime's first run
            model(**inputs)
    timings: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            models[name](**inputs)  # untimed: the timed call follows its own model
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
