"""Measure the finalized model itself: parameter counts, sparsity per layer, storage size, latency.

Nothing here reads the config or a compressor's bookkeeping: every figure is counted from the tensors.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Mapping, Sequence

import torch
from torch import nn

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
    return {
        "sparsity": sum(zeros.values()) / pruned_total if pruned_total else 0.0,
        "layers": {name: zeros[name] / w.numel() for name, w in weights.items()},
        "pattern": None,
        "bits": max((torch.finfo(w.dtype).bits for w in weights.values() if w.is_floating_point()), default=32),
        "total_params": total,
        "nonzero_params": nonzero,
        "size_bytes": sum(t.numel() * t.element_size() for t in unique_tensors(model).values()),
    } | (_pattern_report(weights, patterns) if patterns else {})


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
    """`compression_report` plus `latency_ms`: one forward pass on a single example (batch size 1)."""
    report = compression_report(model, patterns=patterns)
    device = next(model.parameters()).device
    inputs = {k: example[k].unsqueeze(0).to(device) for k in input_keys if k in example}
    report["latency_ms"] = latency_ms(model, inputs)
    return report
