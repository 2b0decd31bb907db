"""Measure the finalized model itself: parameter counts, sparsity per layer, storage size, latency.

Nothing here reads the config or a compressor's bookkeeping: every figure is counted from the tensors.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from compress_sweeps.batching import sequence_length

# what counts as "prunable" unless a pruner says otherwise: as in the reference pruners, the classifier head,
# pooler and embeddings are left dense
DEFAULT_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
DEFAULT_EXCLUDE: tuple[str, ...] = (r"classifier", r"pooler", r"embeddings")


def prunable_weights(
    model: nn.Module,
    layer_types: Sequence[type[nn.Module]] = DEFAULT_LAYER_TYPES,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> dict[str, torch.Tensor]:
    """{parameter name -> weight} of the layers of `layer_types` whose names match none of `exclude`."""
    patterns = [re.compile(p) for p in exclude]
    weights = {}
    for name, module in model.named_modules():
        if isinstance(module, tuple(layer_types)) and not any(p.search(name) for p in patterns):
            weights[f"{name}.weight" if name else "weight"] = module.weight
    return weights


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
def pattern_holds(weight: torch.Tensor, pattern: str) -> bool:
    """Whether the zeros of `weight` (seen as `(out, in)`, conv kernels flattened) follow `pattern`.

    `NxM`: every N-row x M-column block is all zero or free of zeros; `N:M`: every M consecutive input weights of a
    row hold at most N non-zeros; `channel`: every output row is all zero or free of zeros. Counted from the
    tensor alone, independently of the pruner's masks.
    """
    matrix = weight.reshape(weight.shape[0], -1) if weight.ndim > 1 else weight.reshape(1, -1)
    out, inp = matrix.shape
    text = str(pattern).strip().lower()
    if text == "channel":
        rows, cols = 1, inp
    elif match := re.fullmatch(r"(\d+):(\d+)", text):
        n, m = int(match[1]), int(match[2])
        return inp % m == 0 and bool(((matrix != 0).reshape(out, inp // m, m).sum(-1) <= n).all())
    elif match := re.fullmatch(r"(\d+)x(\d+)", text):
        rows, cols = int(match[1]), int(match[2])
    else:
        raise ValueError(f"unknown sparsity pattern '{pattern}' (NxM, N:M or channel)")
    if out % rows or inp % cols:
        return False
    zeros = (matrix == 0).reshape(out // rows, rows, inp // cols, cols).sum(dim=(1, 3))
    return bool(((zeros == 0) | (zeros == rows * cols)).all())


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


@torch.no_grad()
def latency_ms(model: nn.Module, inputs: Mapping[str, torch.Tensor], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of one forward pass on `inputs` (already on the model's device), in milliseconds."""
    was_training = model.training
    model.eval()
    timings = []
    for i in range(warmup + repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(**inputs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i >= warmup:
            timings.append((time.perf_counter() - start) * 1000.0)
    model.train(was_training)
    return statistics.median(timings)


def measure(
    model: nn.Module,
    example: Mapping[str, torch.Tensor],
    input_keys: Sequence[str],
    patterns: Mapping[str, str] | None = None,
) -> dict:
    """`compression_report` plus `latency_ms`: one forward pass on a single example (batch size 1), unpadded: a
    text example counts its own tokens (`latency_seq_len`)."""
    report = compression_report(model, patterns=patterns)
    device = next(model.parameters()).device
    inputs = {k: example[k].unsqueeze(0).to(device) for k in input_keys if k in example}
    report["latency_ms"] = latency_ms(model, inputs)
    if (seq_len := sequence_length(inputs)) is not None:
        report["latency_seq_len"] = seq_len
    return report


# --- quantized storage: bit-width and size counted from the distinct values of each weight ---------------------

MAX_QUANT_BITS = 8  # weights with more levels than this per group count as full precision
QUANT_GROUPS: tuple[int | str | None, ...] = (None, "row", 64, 128, 256, 512, 1024, 2048, 4096)


def _group_rows(weight: torch.Tensor, group: int | str | None) -> torch.Tensor:
    """`weight` as rows of one group each: whole tensor, output channel, or buckets of consecutive values."""
    flat = weight.detach().float().reshape(-1)
    if group is None:
        return flat.reshape(1, -1)
    if group == "row":
        return flat.reshape(weight.shape[0], -1)
    pad = (-flat.numel()) % group
    flat = torch.cat([flat, flat[-1:].expand(pad)]) if pad else flat  # repeats a value: adds no level
    return flat.reshape(-1, group)


def _levels(rows: torch.Tensor, tol: float = 1e-2) -> tuple[int, int | None]:
    """Most distinct values in any row, and most grid points any row needs if every row's nonzero values lie on
    a uniform grid (min + k * step; None if some row does not).

    The grid step is the smallest gap between distinct values, or a 2..8-th of it when codes are skipped.
    Exact zeros (pruned weights) are allowed off the grid: a row holding them spends one more level on them.
    """
    nonzero = rows != 0
    has_zero = (~nonzero).any(dim=1).long()
    anchor = rows.gather(1, rows.abs().argmax(dim=1, keepdim=True))  # a value each row has, used in place of zeros
    values = torch.where(nonzero, rows, anchor).sort(dim=1).values
    gaps = values.diff(dim=1)
    distinct = gaps > 0
    levels = int((distinct.sum(dim=1) + 1 + has_zero).amax())
    min_gap = torch.where(distinct, gaps, torch.full_like(gaps, float("inf"))).amin(dim=1, keepdim=True)
    span = values[:, -1] - values[:, 0]
    grid = torch.zeros_like(has_zero)
    unresolved = torch.ones_like(has_zero, dtype=torch.bool)
    for divisor in range(1, 9):
        step = min_gap / divisor
        ratio = gaps / step
        fits = torch.where(distinct, (ratio - ratio.round()).abs() <= tol, True).all(dim=1) & unresolved
        points = torch.where(span > 0, span / step.squeeze(1), torch.zeros_like(span)).round().long() + 1
        grid = torch.where(fits, points, grid)
        unresolved &= ~fits
    return levels, None if bool(unresolved.any()) else int((grid + has_zero).amax())


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
        rows = _group_rows(weight, group)
        levels, grid = _levels(rows)
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
    layers = [name for name, module in model.named_modules() if isinstance(module, DEFAULT_LAYER_TYPES)]
    layer_weights = {f"{name}.weight" if name else "weight" for name in layers}
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
