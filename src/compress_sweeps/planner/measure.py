"""What the planner times and counts: the plan's inputs, predicted sizes, whole-model timings against the dense
model (before training: the candidate's shape; after: the delivered model), and whether figures meet the budget."""

from __future__ import annotations

import contextlib
import math
import statistics
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from compress_sweeps.batching import first_batch
from compress_sweeps.models.timing import interleaved_ms
from compress_sweeps.planner.runtimes import RUNTIMES

# every candidate's override: the plan times the candidates itself, all in one interleaved set after training
# (Planner._retime), so their runs leave their own timing out (it was 40% of a screened candidate's job)
UNTIMED = "measure_latency=false"


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """`threads` torch threads for what runs inside (the plan's timings), the process's own number after: the jobs
    a basic launcher runs in this process keep theirs."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def plan_inputs(
    eval_set: Dataset, input_keys: Sequence[str], batch_size: int, seq_len: int | None
) -> dict[str, torch.Tensor]:
    """The batch every plan figure is timed on: the first `batch_size` validation examples (repeated when the split
    is smaller), token inputs cut or tiled to `seq_len` tokens with every position attended (no padding)."""
    batch = first_batch(eval_set, input_keys, min(batch_size, len(eval_set)))
    repeat = math.ceil(batch_size / len(next(iter(batch.values()))))
    batch = {k: v.repeat(repeat, *([1] * (v.dim() - 1)))[:batch_size] for k, v in batch.items()}
    if seq_len is None:
        return batch
    tokens = {k for k, v in batch.items() if v.dim() == 2 and not v.is_floating_point()}
    for key in tokens:
        value = batch[key]
        if key == "attention_mask":
            batch[key] = torch.ones(value.shape[0], seq_len, dtype=value.dtype)
        elif key == "token_type_ids":
            batch[key] = torch.zeros(value.shape[0], seq_len, dtype=value.dtype)
        else:
            batch[key] = value.repeat(1, math.ceil(seq_len / value.shape[1]))[:, :seq_len]
    return batch


def predicted_mb(model: nn.Module, runtime: str) -> float:
    """The size of `model` delivered in `runtime`: every tensor at 4 bytes, except the weights the int8 export
    stores as int8 (Linear layers; convolutions too in the static export) at 1 byte. A tied tensor counts once per
    form the file keeps: a causal LM's embedding tied to its head stays fp32 for the lookup and gets an int8 copy
    for the head's MatMul (measured: tiny Llama, both exports)."""
    int8 = {nn.Linear} if runtime == "int8_dynamic" else {nn.Linear, nn.Conv1d, nn.Conv2d}
    quantized = set()
    if runtime != "fp32":
        quantized = {f"{n}.weight" if n else "weight" for n, m in model.named_modules() if type(m) in int8}
    forms: dict[tuple[int, int], set[int]] = {}  # storage -> bytes per element of each form the file keeps
    sizes: dict[tuple[int, int], int] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        forms.setdefault(key, set()).add(1 if name in quantized else tensor.element_size())
        sizes[key] = tensor.numel()
    return sum(sizes[key] * sum(widths) for key, widths in forms.items()) / 2**20


def file_mb(folder: str | Path, runtime: str) -> float:
    """The size of the file a finished run delivers in `runtime` (its weights, or its int8 ONNX file)."""
    import json

    from compress_sweeps.models.runs import WEIGHTS
    from compress_sweeps.run.artifacts import RESULTS

    if runtime == "fp32":
        return (Path(folder) / WEIGHTS).stat().st_size / 2**20
    export = json.loads((Path(folder) / RESULTS).read_text())["compression"]["int8_export"]
    return (Path(folder) / export["file"]).stat().st_size / 2**20


def timed_against_dense(
    dense: nn.Module,
    models: Mapping[str, Callable[..., Any]],
    inputs: Mapping[str, torch.Tensor],
    repeats: int,
    trials: int,
) -> dict[str, dict[str, float]]:
    """{name: {latency_ratio, latency_ms}} of each model against the dense fp32 model, all timed interleaved in
    `trials` sets (medians over the sets)."""
    timed = {"dense": dense.eval(), **models}
    sets = [interleaved_ms(timed, inputs, repeats=repeats, warmup=1) for _ in range(trials)]
    return {
        name: {
            "latency_ratio": statistics.median(s[name] / s["dense"] for s in sets),
            "latency_ms": statistics.median(s[name] for s in sets),
        }
        for name in models
    } | {"dense": {"latency_ratio": 1.0, "latency_ms": statistics.median(s["dense"] for s in sets)}}


def shape_timings(
    dense: nn.Module,
    shapes: Mapping[str, tuple[nn.Module, str]],
    inputs: Mapping[str, torch.Tensor],
    threads: int,
    repeats: int,
    trials: int,
) -> dict[str, dict[str, float]]:
    """Whole-model timings of candidate shapes {name: (model, runtime)} before training (their weights are the
    dense model's, cut), each built in its runtime, against the dense fp32 model."""
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            name: RUNTIMES[runtime].build(model, inputs, Path(tmp) / f"{i}.onnx", threads)
            for i, (name, (model, runtime)) in enumerate(shapes.items())
        }
        return timed_against_dense(dense, models, inputs, repeats, trials)


FIGURES = {"latency": "latency_ratio", "latency_ms": "latency_ms", "size_mb": "size_mb"}  # budget -> figure


def budget_used(figures: Mapping[str, float | None], budget: Mapping[str, float]) -> float:
    """The largest share of a budget that `figures` ({latency_ratio, latency_ms, size_mb}) use (1.0: at the limit;
    inf when a figure is missing)."""
    shares = [(figures.get(FIGURES[key]) or math.inf) / limit for key, limit in budget.items()]
    return max(shares, default=0.0)


def meets(figures: Mapping[str, float | None], budget: Mapping[str, float], margin: float = 0.0) -> bool:
    """Whether `figures` are within every budget, less `margin` of it."""
    return budget_used(figures, budget) <= 1 - margin
