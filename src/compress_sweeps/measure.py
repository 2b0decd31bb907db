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
def compression_report(model: nn.Module, weights: Mapping[str, torch.Tensor] | None = None) -> dict:
    """Sparsity over the prunable weights (overall and per layer), parameter counts and storage size."""
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


def measure(model: nn.Module, example: Mapping[str, torch.Tensor], input_keys: Sequence[str]) -> dict:
    """`compression_report` plus `latency_ms`: one forward pass on a single example (batch size 1)."""
    report = compression_report(model)
    device = next(model.parameters()).device
    inputs = {k: example[k].unsqueeze(0).to(device) for k in input_keys if k in example}
    report["latency_ms"] = latency_ms(model, inputs)
    return report
