"""The real int8 model for CPU inference, built after finalize, evaluated and timed against the fp32 model.

Two backends (`quantizer.int8_backend`):

- `onnxruntime` (default, the maintained path): ONNX export + ONNX Runtime's `quantize_dynamic`, in `onnx_export.py`.
- `torch`: every nn.Linear becomes `torch.ao.nn.quantized.dynamic.Linear` over the FBGEMM int8 GEMM of the CPU
  torch wheel (deprecated with torch's quantized tensors, pytorch/pytorch#184982).

Weights already folded onto a symmetric int8 grid keep their codes (torch: any grid of at most 127 codes; ONNX
Runtime: the 127-code grid it picks itself, max|w| / 127); others are re-quantized per output channel, and counted
as such. No calibration data is needed: activations are quantized per batch at run time. torchao 0.18.0's
`Int8DynamicActivationInt8WeightConfig` and `Int8WeightOnlyConfig` ran *slower* than fp32 in eager mode on our CPU
(MiniLM, batch 32 x seq 64), so they are not offered; see the README's Quantization section.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
from torch.utils.data import Dataset

from compress_sweeps.batching import loader, sequence_length
from compress_sweeps.errors import ConfigError
from compress_sweeps.quantizers.grid import exact_grid
from compress_sweeps.quantizers.onnx_export import ONNX_FILE, to_int8_onnx

BACKENDS = {
    "onnxruntime": "ONNX Runtime quantize_dynamic (int8 MatMulIntegerToFloat, dynamic uint8 activations)",
    "torch": "torch.ao.nn.quantized.dynamic.Linear (FBGEMM int8 GEMM, dynamic activations)",
}


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
    backend: str = "onnxruntime",
    folder: str | Path | None = None,
    batch_size: int = 32,
) -> dict:
    """Export `model` to int8 with `backend`, evaluate it, and time it against `model` on one eval batch, on CPU.

    The timed batch is the first `batch_size` validation examples, padded to the longest of them: `latency_batch`
    examples of `latency_seq_len` tokens each (text).

    The onnxruntime export is kept as `folder/model.int8.onnx` (in a temporary folder when `folder` is None). A model
    the ONNX exporter cannot trace falls back to the torch backend, and `onnxruntime_failed` says why.
    """
    if next(model.parameters()).device.type != "cpu":
        return {"skipped": "the int8 dynamic kernels are CPU-only; this run trained on another device"}
    batch = next(iter(loader(eval_set, batch_size)))
    inputs = {k: batch[k] for k in input_keys if k in batch}
    fallback = {}
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "onnxruntime":
            try:
                int8, counts = to_int8_onnx(model, inputs, Path(folder or tmp) / ONNX_FILE)
            except Exception as error:  # an op the ONNX exporter lacks must not cost the trained run: use torch
                reason = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                print(f"int8 export: ONNX export failed ({reason}); using int8_backend=torch instead")
                fallback, backend = {"onnxruntime_failed": reason}, "torch"
        if backend == "torch":
            int8, counts = to_int8(model)
        metrics = evaluate(int8)
        latency = paired_latency_ms({"fp32": model, "int8": int8}, inputs)
    return {
        "backend": BACKENDS[backend],
        **fallback,
        **counts,
        **({"file": ONNX_FILE} if backend == "onnxruntime" and folder else {}),
        "eval/accuracy": metrics["eval/accuracy"],
        "eval/accuracy_fp32": fp32_metrics["eval/accuracy"],
        "accuracy_drop": fp32_metrics["eval/accuracy"] - metrics["eval/accuracy"],
        "latency_batch": len(batch["labels"]),
        **({"latency_seq_len": sequence_length(inputs)} if "input_ids" in inputs else {}),
        "latency_ms_fp32": latency["fp32"],
        "latency_ms_int8": latency["int8"],
        "latency_ratio": latency["int8"] / latency["fp32"],
    }


def wants_int8_export(members: Sequence[object]) -> str | None:
    """The int8 backend a compressor of the run asks for (`export_int8: true`, `int8_backend`), or None."""
    return next((getattr(m, "int8_backend", "onnxruntime") for m in members if getattr(m, "export_int8", False)), None)


def check_backend(backend: str) -> str:
    """`quantizer.int8_backend` must name a backend (checked when the quantizer is built, before training)."""
    if backend not in BACKENDS:
        allowed = f"must be one of {' | '.join(BACKENDS)}"
        raise ConfigError("quantizer.int8_backend", backend, allowed, problem="is unknown")
    return backend
