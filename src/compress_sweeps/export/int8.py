"""The real int8 model for CPU inference, built after finalize, evaluated and timed against the fp32 model.

The `export` config group picks one (`export=none` builds none; `quantizer=q8bert` and
`quantizer=quantized_distillation` select `export=onnxruntime` unless the command line says otherwise):

- `onnxruntime` (the maintained path): ONNX export + ONNX Runtime's `quantize_dynamic`, in `onnx.py`.
- `torch`: every nn.Linear becomes `torch.ao.nn.quantized.dynamic.Linear` over the FBGEMM int8 GEMM of the CPU
  torch wheel (deprecated with torch's quantized tensors, pytorch/pytorch#184982).

Weights already folded onto a symmetric int8 grid keep their codes (torch: any grid of at most 127 codes; ONNX
Runtime: the 127-code grid it picks itself, max|w| / 127); others are re-quantized per output channel, and counted
as such. No calibration data is needed: activations are quantized per batch at run time. torchao 0.18.0's
`Int8DynamicActivationInt8WeightConfig` and `Int8WeightOnlyConfig` ran *slower* than fp32 in eager mode on our CPU
(MiniLM, batch 32 x seq 64), so they are not offered; see docs/methods.md (the int8 export).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
from torch.utils.data import Dataset

from compress_sweeps.batching import first_batch, sequence_length
from compress_sweeps.errors import ConfigError
from compress_sweeps.export.onnx import ONNX_FILE, to_int8_onnx
from compress_sweeps.models.timing import conditions, interleaved_ms
from compress_sweeps.objectives import goal, headline, short
from compress_sweeps.weights.grid import exact_grid

BACKENDS = {
    "onnxruntime": "ONNX Runtime quantize_dynamic (int8 MatMulIntegerToFloat, dynamic uint8 activations)",
    "torch": "torch.ao.nn.quantized.dynamic.Linear (FBGEMM int8 GEMM, dynamic activations)",
}

log = logging.getLogger(__name__)


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


def paired_latency_ms(models: Mapping[str, nn.Module], inputs: Mapping[str, torch.Tensor], repeats: int = 10):
    """Median forward time of each model on the same `inputs`, runs interleaved so load on the machine hits all."""
    return interleaved_ms(models, inputs, repeats=repeats)


def int8_export_report(
    model: nn.Module,
    evaluate: Callable[[nn.Module], dict[str, float]],
    eval_set: Dataset,
    input_keys: Sequence[str],
    fp32_metrics: Mapping[str, float],
    backend: str = "onnxruntime",
    folder: str | Path | None = None,
    batch_size: int = 32,
    reference: nn.Module | None = None,
    timed: bool = True,
) -> dict:
    """Export `model` to int8 with `backend`, evaluate it, and time it against `model` (and the dense `reference`,
    the same architecture rebuilt by the run) on one eval batch, on CPU, interleaved.

    The timed batch is the first `batch_size` validation examples, padded to the longest of them: `latency_batch`
    examples of `latency_seq_len` tokens each (text).

    The onnxruntime export is kept as `folder/model.int8.onnx` (in a temporary folder when `folder` is None). A model
    the ONNX exporter cannot trace falls back to the torch backend, and `onnxruntime_failed` says why.
    """
    if next(model.parameters()).device.type != "cpu":
        return {"skipped": "the int8 dynamic kernels are CPU-only; this run trained on another device"}
    inputs = first_batch(eval_set, input_keys, batch_size)
    fallback = {}
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "onnxruntime":
            try:
                int8, counts = to_int8_onnx(model, inputs, Path(folder or tmp) / ONNX_FILE)
            except Exception as error:  # an op the ONNX exporter lacks must not cost the trained run: use torch
                reason = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                log.warning("int8 export: ONNX export failed (%s); using export=torch instead", reason)
                fallback, backend = {"onnxruntime_failed": reason}, "torch"
        if backend == "torch":
            int8, counts = to_int8(model)
        measured = compare_int8(int8, model, evaluate, inputs, fp32_metrics, reference, timed)
    file = {"file": ONNX_FILE} if backend == "onnxruntime" and folder else {}
    return {"backend": BACKENDS[backend], **fallback, **counts, **file, **measured}


def compare_int8(
    int8: nn.Module,
    model: nn.Module,
    evaluate: Callable[[nn.Module], dict[str, float]],
    inputs: Mapping[str, torch.Tensor],
    fp32_metrics: Mapping[str, float],
    reference: nn.Module | None = None,
    timed: bool = True,
) -> dict:
    """The int8 model's headline metric beside the fp32 model's (accuracy, or an LM's perplexity), and when `timed`
    both timed on `inputs` (one eval batch), interleaved with the dense `reference` (the same architecture rebuilt
    by the run) when given. `accuracy_drop` / `perplexity_drop`: how much worse int8 is (positive: worse)."""
    metrics = evaluate(int8)
    metric = headline(dict(fp32_metrics))
    worse = fp32_metrics[metric] - metrics[metric]
    accuracy = {
        metric: metrics[metric],
        f"{metric}_fp32": fp32_metrics[metric],
        f"{short(metric)}_drop": worse if goal(metric) == "maximize" else -worse,
    }
    if not timed:
        return accuracy
    models = {"fp32": model, "int8": int8} | ({"dense": reference.cpu()} if reference is not None else {})
    latency = paired_latency_ms(models, inputs)
    versus_dense = {}
    if reference is not None:  # ratios against the dense fp32 model: the figures comparable across runs
        versus_dense = {
            "latency_ms_dense": latency["dense"],
            "latency_ratio_vs_dense": latency["int8"] / latency["dense"],
            "speedup_vs_dense": latency["dense"] / latency["int8"],
        }
    return {
        **accuracy,
        "latency_batch": len(next(iter(inputs.values()))),
        **({"latency_seq_len": sequence_length(inputs)} if "input_ids" in inputs else {}),
        "latency_ms_fp32": latency["fp32"],
        "latency_ms_int8": latency["int8"],
        "latency_ratio": latency["int8"] / latency["fp32"],
        **versus_dense,
        "latency_input_shape": {k: list(v.shape) for k, v in inputs.items()},
        **conditions(),
    }


class NoExport:
    """`export=none`: the finalized fp32 model is the run's deliverable; nothing more is built.

    Every export says which int8 model it builds in `int8`: `dynamic` or `static` activations, or None for none (a
    post-training quantizer needs one: run/build.py `check_export`).

    Every export is called after finalize as `export(model, evaluate, eval_set, input_keys, fp32_metrics, folder,
    train_set=..., reference=...)`: `evaluate(model)` scores a model on `eval_set`, `folder` keeps the exported file
    (None: do not keep it), `train_set` (the encoded training split) is what a calibrating export draws its examples
    from, `reference` (the dense model of the same architecture) is what the int8 model's speed is a ratio against, and
    `timed=False` (run key `measure_latency: false`) leaves the timing out.
    """

    int8: str | None = None

    def __call__(
        self,
        model: nn.Module,
        evaluate: Callable[[nn.Module], dict[str, float]],
        eval_set: Dataset,
        input_keys: Sequence[str],
        fp32_metrics: Mapping[str, float],
        folder: str | Path | None = None,
        train_set: Dataset | None = None,
        reference: nn.Module | None = None,
        timed: bool = True,
    ) -> dict | None:
        return None


class Int8Export:
    """`export=onnxruntime | torch`: the int8 model of `backend`, evaluated and timed against the fp32 model and the
    dense reference on an eval batch of `batch_size`; returns `compression.int8_export` of results.json."""

    int8 = "dynamic"  # activation ranges measured per batch at run time

    def __init__(self, backend: str = "onnxruntime", batch_size: int = 32) -> None:
        if backend not in BACKENDS:
            raise ConfigError("export.backend", backend, f"must be one of {' | '.join(BACKENDS)}", problem="is unknown")
        if batch_size < 1:
            raise ConfigError("export.batch_size", batch_size, "must be an integer >= 1")
        self.backend, self.batch_size = backend, batch_size

    def __call__(
        self,
        model: nn.Module,
        evaluate: Callable[[nn.Module], dict[str, float]],
        eval_set: Dataset,
        input_keys: Sequence[str],
        fp32_metrics: Mapping[str, float],
        folder: str | Path | None = None,
        train_set: Dataset | None = None,
        reference: nn.Module | None = None,
        timed: bool = True,
    ) -> dict | None:
        """The int8 model of `backend` measured against `model` (`train_set` is not needed: dynamic activations)."""
        return int8_export_report(
            model, evaluate, eval_set, input_keys, fp32_metrics, self.backend, folder, self.batch_size, reference, timed
        )
