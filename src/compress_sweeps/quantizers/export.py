"""The real int8 model for CPU inference: every Linear becomes a dynamically quantized int8 Linear (FBGEMM/oneDNN).

Weights already folded onto a symmetric grid of at most 127 codes (Q8BERT, 8 bits or fewer) are stored exactly:
the scale is read back from the folded values, so the int8 codes are the ones trained. Other weights (bucketed
or learned non-uniform grids) are re-quantized to int8 per output channel, and counted as such. Activations are
quantized per batch at run time (dynamic quantization), so no calibration data is needed.

Backend: `torch.ao.nn.quantized.dynamic.Linear` over the FBGEMM int8 GEMM kernels shipped in the CPU torch wheel
(deprecated with torch's quantized tensors, pytorch/pytorch#184982, but still the fast CPU path). torchao 0.18.0's
`Int8DynamicActivationInt8WeightConfig` and `Int8WeightOnlyConfig` (the maintained successors) ran *slower* than
fp32 in eager mode on our CPU (MiniLM, batch 32 x seq 64), so they are not used; see the README's Quantization
section for the figures.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
from torch.utils.data import DataLoader, Dataset

BACKEND = "torch.ao.nn.quantized.dynamic.Linear (FBGEMM int8 GEMM, dynamic activations)"
CODE_LIMITS = (127, 63, 31, 15, 7, 3, 1)  # symmetric grids of 8, 7, ... 2 bits all fit int8 codes exactly


def exact_grid(weight: torch.Tensor, per_channel: bool, tol: float = 1e-3) -> torch.Tensor | None:
    """The scale(s) under which `weight` is integer codes in [-127, 127], or None if it is on no such grid."""
    rows = weight.detach().float().reshape(weight.shape[0], -1)
    amax = rows.abs().amax(dim=1, keepdim=True) if per_channel else rows.abs().amax().reshape(1, 1)
    amax = torch.where(amax > 0, amax, torch.ones_like(amax))
    for codes in CODE_LIMITS:
        scale = amax / codes
        scaled = rows / scale
        if float((scaled - scaled.round()).abs().max()) < tol:
            return scale.reshape(-1)
    return None


def int8_linear(linear: nn.Linear) -> tuple[DynamicInt8Linear, bool]:
    """An int8 dynamic Linear holding `linear`'s weights; True when they were stored without re-quantizing."""
    weight = linear.weight.detach().float().cpu()
    scale = exact_grid(weight, per_channel=False)
    exact = scale is not None
    if exact:
        qweight = torch.quantize_per_tensor(weight, float(scale[0]), 0, torch.qint8)
    else:
        scale = exact_grid(weight, per_channel=True)
        exact = scale is not None
        if not exact:
            amax = weight.abs().amax(dim=1)
            scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
        zeros = torch.zeros(len(scale), dtype=torch.long)
        qweight = torch.quantize_per_channel(weight, scale.double(), zeros, 0, torch.qint8)
    module = DynamicInt8Linear(linear.in_features, linear.out_features, bias_=linear.bias is not None)
    module.set_weight_bias(qweight, None if linear.bias is None else linear.bias.detach().float().cpu())
    return module, exact


def to_int8(model: nn.Module) -> tuple[nn.Module, dict[str, int]]:
    """A CPU copy of `model` with every nn.Linear swapped for an int8 dynamic Linear; counts exact/re-quantized."""
    int8 = copy.deepcopy(model).cpu().eval()
    counts = {"exact_layers": 0, "requantized_layers": 0}
    for name, module in list(int8.named_modules()):
        if type(module) is nn.Linear:
            parent_name, _, child = name.rpartition(".")
            replacement, exact = int8_linear(module)
            setattr(int8.get_submodule(parent_name) if parent_name else int8, child, replacement)
            counts["exact_layers" if exact else "requantized_layers"] += 1
    return int8, counts


@torch.inference_mode()
def paired_latency_ms(models: Mapping[str, nn.Module], inputs: Mapping[str, torch.Tensor], repeats: int = 10):
    """Median forward time of each model on the same `inputs`, runs interleaved so load on the machine hits both."""
    timings: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.eval()(**inputs)  # warm-up (weight packing, allocator)
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(**inputs)
            timings[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(values) for name, values in timings.items()}


def int8_export_report(
    model: nn.Module,
    evaluate: Callable[[nn.Module], dict[str, float]],
    eval_set: Dataset,
    input_keys: Sequence[str],
    fp32_metrics: Mapping[str, float],
    batch_size: int = 32,
) -> dict:
    """Export `model` to int8, evaluate it, and time it against `model` on one eval batch, both on CPU."""
    if next(model.parameters()).device.type != "cpu":
        return {"skipped": "the int8 dynamic kernels are CPU-only; this run trained on another device"}
    int8, counts = to_int8(model)
    metrics = evaluate(int8)
    batch = next(iter(DataLoader(eval_set, batch_size=batch_size)))
    inputs = {k: batch[k] for k in input_keys if k in batch}
    latency = paired_latency_ms({"fp32": model, "int8": int8}, inputs)
    return {
        "backend": BACKEND,
        **counts,
        "eval/accuracy": metrics["eval/accuracy"],
        "eval/accuracy_fp32": fp32_metrics["eval/accuracy"],
        "accuracy_drop": fp32_metrics["eval/accuracy"] - metrics["eval/accuracy"],
        "latency_batch": len(batch["labels"]),
        "latency_ms_fp32": latency["fp32"],
        "latency_ms_int8": latency["int8"],
        "latency_ratio": latency["int8"] / latency["fp32"],
    }


def wants_int8_export(members: Sequence[object]) -> bool:
    """True when a compressor of the run asks for the int8 export (`export_int8: true` in its config)."""
    return any(getattr(member, "export_int8", False) for member in members)
