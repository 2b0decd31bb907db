"""Measure the finalized model itself: parameter counts, sparsity per layer, storage size, and against the dense
reference its shapes and costs (`run/shapes.py`) and its latency ratio (`run/latency.py`).

Nothing here reads the config or a compressor's bookkeeping: every figure is counted from the tensors and modules;
the methods' specs only say which weights and which part of the model to count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from compress_sweeps.batching import first_batch
from compress_sweeps.models.structure import differs
from compress_sweeps.run.latency import headline, latency_report
from compress_sweeps.run.shapes import structure_report
from compress_sweeps.spec import CompressionSpec
from compress_sweeps.weights.grid import grid_levels, group_rows
from compress_sweeps.weights.patterns import pattern_holds
from compress_sweeps.weights.selection import LayerSelection, weight_name

# the scalar figures `measure` puts in results.json -> compression, which `optimized_metric` may name
MEASURED = (
    "sparsity",
    "bits",
    "total_params",
    "nonzero_params",
    "size_bytes",
    "sparse_size_bytes",
    "speedup",
    "latency_ratio",
)
TIMED = ("speedup", "latency_ratio")  # of those, the ones only a run that measures latency has


def prunable_weights(model: nn.Module, selection: LayerSelection | None = None) -> dict[str, torch.Tensor]:
    """{parameter name -> weight} of the layers `selection` picks (default: Linear/Conv2d outside the classifier head,
    pooler and embeddings, as the pruners' defaults); what `sparsity` is counted over when no pruner names weights."""
    selection = selection or LayerSelection()
    return {weight_name(name): module.weight for name, module in selection.select(model, required=False).items()}


def unique_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without tensors that share storage with an earlier entry (tied weights count once)."""
    seen: set[tuple[int, int]] = set()
    tensors = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key not in seen:
            seen.add(key)
            tensors[name] = tensor
    return tensors


@torch.no_grad()
def compression_report(
    model: nn.Module,
    weights: Mapping[str, torch.Tensor] | None = None,
    patterns: Mapping[str, str] | None = None,
) -> dict:
    """Sparsity over the prunable weights (overall and per layer), parameter counts and storage size.

    `patterns` ({parameter name -> pattern}, from a pruner) makes those parameters the prunable weights and adds
    `pattern` and `pattern_holds` (plus `pattern_violations`, the layers where it does not), re-counted here.
    """
    if patterns:
        named = dict(model.named_parameters())
        weights = {name: named[name] for name in patterns}
    weights = prunable_weights(model) if weights is None else weights
    zeros = {name: int((w == 0).sum()) for name, w in weights.items()}
    pruned_total = sum(w.numel() for w in weights.values())
    parameters = dict(model.named_parameters())
    total = sum(p.numel() for p in parameters.values())
    nonzero = sum(int(p.count_nonzero()) for p in parameters.values())
    report = {
        "sparsity": sum(zeros.values()) / pruned_total if pruned_total else 0.0,
        "layers": {name: zeros[name] / w.numel() for name, w in weights.items()},
        "pattern": None,
        "bits": max((torch.finfo(w.dtype).bits for w in weights.values() if w.is_floating_point()), default=32),
        "total_params": total,
        "nonzero_params": nonzero,
        "size_bytes": sum(t.numel() * t.element_size() for t in unique_tensors(model).values()),
    } | (_pattern_report(weights, patterns) if patterns else {})
    return report | quantized_report(model, weights)  # quantized weights counted at their measured bit-width


def _pattern_report(weights: Mapping[str, torch.Tensor], patterns: Mapping[str, str]) -> dict:
    labels = set(patterns.values())
    violations = [name for name, label in patterns.items() if not pattern_holds(weights[name], label)]
    return {
        "pattern": labels.pop() if len(labels) == 1 else dict(patterns),
        "pattern_holds": not violations,
        "pattern_violations": violations,
    }


def measure(
    model: nn.Module,
    eval_set: Dataset,
    input_keys: Sequence[str],
    specs: Sequence[CompressionSpec] = (),
    reference: nn.Module | None = None,
    timed: bool = True,
) -> dict:
    """`compression_report` over the weights the methods' specs name as pruned (the default prunable layers when
    none does) and the specs themselves; with the dense `reference` (the same architecture, rebuilt by the run),
    `structure` (shapes and costs against it) when a method promises one or the shapes differ, and when `timed`,
    `latency` (both timed interleaved, batch 1 and 32) with its headline `speedup` / `latency_ratio`."""
    patterns = {name: label for spec in specs for name, label in spec.patterns.items()}
    report = compression_report(model, patterns=patterns or None)
    if reference is not None:
        promises = [spec.structure for spec in specs if spec.structure is not None]
        if promises or differs(model, reference):
            one = first_batch(eval_set, input_keys, 1, next(model.parameters()).device)
            report["structure"] = structure_report(model, reference, promises, one)
        if timed:
            report["latency"] = latency_report(model, reference, eval_set, input_keys)
            report |= headline(report["latency"])
    report["spec"] = [spec.to_dict() for spec in specs]
    return report


# --- quantized storage: bit-width and size counted from the distinct values of each weight ---------------------

MAX_QUANT_BITS = 8  # weights with more levels than this per group count as full precision
QUANT_GROUPS: tuple[int | str | None, ...] = (None, "row", 64, 128, 256, 512, 1024, 2048, 4096)


def quantized_storage(weight: torch.Tensor) -> tuple[int, int]:
    """(bits per weight, bytes) of the cheapest encoding that reproduces `weight` exactly.

    Candidates: full precision; one codebook of all levels per tensor (indices + 4 bytes per level); or, for a
    uniform grid per tensor, output channel or bucket of consecutive values, indices + a 4-byte scale and
    offset per group. Bits = ceil(log2(most levels in a group)), only up to `MAX_QUANT_BITS`.
    """
    best_bits = torch.finfo(weight.dtype).bits if weight.is_floating_point() else 8 * weight.element_size()
    best_bytes = weight.numel() * weight.element_size()
    if not weight.is_floating_point() or weight.ndim < 2:
        return best_bits, best_bytes
    rows = weight.detach().reshape(weight.shape[0], -1)
    probe_rows = max(1, 4096 // rows.shape[1])
    # the first rows are grouped as in the whole tensor: no encoding there means none for the whole (cheap exit)
    if rows.shape[0] > probe_rows and quantized_storage(rows[:probe_rows])[0] > MAX_QUANT_BITS:
        return best_bits, best_bytes
    for group in QUANT_GROUPS:
        rows = group_rows(weight.float(), group)
        levels, grid = grid_levels(rows)
        options = [] if grid is None else [(grid, len(rows) * 8)]  # uniform grid: a scale and offset per group
        if group is None:
            options.append((levels, levels * 4))  # one codebook of the tensor's distinct values
        for count, overhead in options:
            bits = max(1, math.ceil(math.log2(count)))
            size = math.ceil(weight.numel() * bits / 8) + overhead
            if bits <= MAX_QUANT_BITS and size < best_bytes:
                best_bits, best_bytes = bits, size
    return best_bits, best_bytes


@torch.no_grad()
def quantized_report(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> dict:
    """`bits`, `layer_bits` (measured per weight of `weights`) and `size_bytes` with every Linear/Conv2d weight at
    its measured width (plus scales or codebook); equal to the plain figures for a full-precision model."""
    every_layer = LayerSelection(exclude=())
    layer_weights = {weight_name(name) for name in every_layer.select(model, required=False)}
    storage = {name: quantized_storage(t) for name, t in unique_tensors(model).items() if name in layer_weights}
    tensors = unique_tensors(model)
    size = sum(storage[name][1] if name in storage else t.numel() * t.element_size() for name, t in tensors.items())
    sparse = sum(
        sparse_storage(t, *storage[name]) if name in storage else t.numel() * t.element_size()
        for name, t in tensors.items()
    )
    bits = {name: storage[name][0] if name in storage else quantized_storage(w)[0] for name, w in weights.items()}
    # `bits`: the widest of the quantized weights (layers kept at full precision show in `layer_bits`)
    quantized = [b for b in bits.values() if b <= MAX_QUANT_BITS]
    widest = max(quantized) if quantized else max(bits.values(), default=32)
    return {"bits": widest, "size_bytes": size, "sparse_size_bytes": sparse, "layer_bits": bits}


def sparse_storage(weight: torch.Tensor, bits: int, dense_bytes: int) -> int:
    """Bytes of `weight` stored as a bitmask of its non-zeros plus those values at `bits` each (and the same
    scales/codebook overhead as its dense encoding of `dense_bytes`), or `dense_bytes` when that is smaller."""
    overhead = dense_bytes - math.ceil(weight.numel() * bits / 8)
    nonzero = int(weight.count_nonzero())
    return min(dense_bytes, math.ceil(weight.numel() / 8) + math.ceil(nonzero * bits / 8) + overhead)
