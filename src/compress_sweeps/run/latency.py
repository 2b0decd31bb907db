"""Latency as a ratio against the dense reference: the finalized model and the dense model of the same architecture
(rebuilt in this process from the run's model config), timed interleaved on the same eval batches.

Absolute milliseconds are kept, labelled with the batch, the input shape, the threads, the machine and the load
average they were taken under, and are never compared across runs: only the ratios are (`speedup` = dense time /
model time; `ratio` its inverse). fp32 PyTorch eager on the run's device; the int8 export times itself the same
way (export/int8.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from compress_sweeps.batching import first_batch, sequence_length
from compress_sweeps.models.timing import conditions, interleaved_ms

BATCHES = (1, 32)  # one request, and a batch as served offline
REPEATS = {1: 15, 32: 6}  # medians of this many interleaved forward passes per model (after one warm-up each)


def latency_report(
    model: nn.Module, reference: nn.Module, eval_set: Dataset, input_keys: Sequence[str]
) -> dict[str, Any]:
    """{`batch_<n>`: {batch, input shape, seq_len, dense_ms, model_ms, ratio, speedup}} for batch 1 and 32 (or the
    whole eval split when smaller), plus the conditions (threads, machine, load average, device, dtype)."""
    device = next(model.parameters()).device
    was_training = model.training
    report: dict[str, Any] = {}
    for size in sorted({min(b, len(eval_set)) for b in BATCHES}):
        inputs = first_batch(eval_set, input_keys, size, device)
        times = interleaved_ms({"dense": reference, "model": model}, inputs, repeats=REPEATS.get(size, 6), warmup=1)
        report[f"batch_{size}"] = {
            "batch": size,
            "input_shape": {k: list(v.shape) for k, v in inputs.items()},
            "seq_len": sequence_length(inputs),
            "dense_ms": times["dense"],
            "model_ms": times["model"],
            "ratio": times["model"] / times["dense"],
            "speedup": times["dense"] / times["model"],
            "weights_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        }
    model.train(was_training)
    return report | conditions(device) | {"device": str(device), "backend": "pytorch eager"}


def headline(report: dict[str, Any]) -> dict[str, float]:
    """The figures a sweep may optimize and the report plots: the largest batch's speedup and latency ratio."""
    largest = max((v for v in report.values() if isinstance(v, dict) and "batch" in v), key=lambda v: v["batch"])
    return {"speedup": largest["speedup"], "latency_ratio": largest["ratio"]}
