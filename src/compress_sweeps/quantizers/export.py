"""The real int8 model for CPU inference, built after finalize, evaluated and timed against the fp32 model.

Two backends (`quantizer.int8_backend`):

- `onnxruntime` (default): the model is exported to ONNX (`torch.onnx.export`; Hugging Face models switched to eager
  attention first, whose MatMul/Softmax graph ONNX Runtime fuses) and quantized by ONNX Runtime's maintained
  `quantize_dynamic`: int8 weights (symmetric, [-127, 127]) and uint8 activations quantized per batch at run time.
  At session creation ONNX Runtime fuses each DynamicQuantizeLinear + MatMulInteger + scale into one
  MatMulIntegerToFloat kernel (VNNI on x86), plus LayerNorm and GELU fusions. Only MatMul/Gemm are quantized
  (Linear layers; convolutions stay fp32, as in the torch backend).
- `torch`: every nn.Linear becomes `torch.ao.nn.quantized.dynamic.Linear` over the FBGEMM int8 GEMM of the CPU
  torch wheel (deprecated with torch's quantized tensors, pytorch/pytorch#184982).

Both store weights already folded onto a symmetric grid of at most 127 codes (Q8BERT, 8 bits or fewer) exactly:
int8 codes under scale max|w| / codes, the grid the quantizer trained. Other weights (bucketed or learned
non-uniform grids) are re-quantized to int8 (per output channel), and counted as such. No calibration data is
needed. torchao 0.18.0's `Int8DynamicActivationInt8WeightConfig` and `Int8WeightOnlyConfig` ran *slower* than fp32
in eager mode on our CPU (MiniLM, batch 32 x seq 64), so they are not offered; see the README's Quantization section.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
from torch.utils.data import DataLoader, Dataset

from compress_sweeps.checks import ConfigError
from compress_sweeps.trainer import logits_of

BACKENDS = {
    "onnxruntime": "ONNX Runtime quantize_dynamic (int8 MatMulIntegerToFloat, dynamic uint8 activations)",
    "torch": "torch.ao.nn.quantized.dynamic.Linear (FBGEMM int8 GEMM, dynamic activations)",
}
ONNX_FILE = "model.int8.onnx"  # the onnxruntime export, kept in the run folder for deployment
CODE_LIMITS = (127, 63, 31, 15, 7, 3, 1)  # symmetric grids of 8, 7, ... 2 bits all fit int8 codes exactly


def exact_grid(
    weight: torch.Tensor, per_channel: bool, tol: float = 1e-3, code_limits: Sequence[int] = CODE_LIMITS
) -> torch.Tensor | None:
    """The scale(s) under which `weight` is integer codes in [-127, 127], or None if it is on no such grid."""
    rows = weight.detach().float().reshape(weight.shape[0], -1)
    amax = rows.abs().amax(dim=1, keepdim=True) if per_channel else rows.abs().amax().reshape(1, 1)
    amax = torch.where(amax > 0, amax, torch.ones_like(amax))
    for codes in code_limits:
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


class _LogitsOf(nn.Module):
    """Positional inputs in `keys` order -> logits: the signature the ONNX graph gets."""

    def __init__(self, model: nn.Module, keys: Sequence[str]) -> None:
        super().__init__()
        self.model, self.keys = model, list(keys)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(**dict(zip(self.keys, inputs, strict=True))))


class OnnxModel(nn.Module):
    """An ONNX Runtime session behind the module call convention: `model(**inputs)` -> logits (CPU tensor)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        super().__init__()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()  # the same threads as the fp32 model
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no spin-waiting after a call: idle ORT threads would steal the cores from whatever runs next (the fp32
        # model timed beside it, the rest of the run)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        feed = {name: inputs[name].detach().cpu().numpy() for name in self.input_names}
        return torch.from_numpy(self.session.run(None, feed)[0])


def _dynamic_axes(inputs: Mapping[str, torch.Tensor]) -> dict[str, dict[int, str]]:
    """Batch is dynamic for every input; token inputs ([batch, sequence] integers) have a dynamic length too."""
    tokens = {name for name, tensor in inputs.items() if tensor.ndim == 2 and not tensor.is_floating_point()}
    axes = {name: {0: "batch", 1: "sequence"} if name in tokens else {0: "batch"} for name in inputs}
    return axes | {"logits": {0: "batch"}}


def _needs_reduced_range() -> bool:
    """ONNX Runtime's advice: x86 CPUs without VNNI can saturate u8 x s8 products, so quantize weights to 7 bits
    there (`reduce_range`); with VNNI (or on ARM) the full int8 range is safe."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume a recent CPU
        return False
    return not any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


@contextlib.contextmanager
def _quiet_export():
    """The TorchScript exporter's tracer/deprecation warnings and ONNX Runtime's pre-processing hint are noise here."""
    root = logging.getLogger()
    level = root.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(level)


def export_onnx(model: nn.Module, example: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """`model` (a CPU copy; Hugging Face models in eager attention, the graph ORT fuses) as fp32 ONNX at `path`.

    Inputs are named and ordered as in `example`; the batch axis (and a token input's length) is dynamic.
    """
    copy_ = copy.deepcopy(model).cpu().eval()
    if hasattr(copy_, "set_attn_implementation"):
        copy_.set_attn_implementation("eager")
    inputs = {k: v.cpu() for k, v in example.items()}
    with _quiet_export(), torch.inference_mode():
        torch.onnx.export(  # the TorchScript exporter: ONNX Runtime's attention fusions match its graph
            _LogitsOf(copy_, list(inputs)).eval(),
            tuple(inputs.values()),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=list(inputs),
            output_names=["logits"],
            dynamic_axes=_dynamic_axes(inputs),
            do_constant_folding=True,
        )
    return Path(path)


def to_int8_onnx(
    model: nn.Module, example: Mapping[str, torch.Tensor], path: str | Path, threads: int | None = None
) -> tuple[OnnxModel, dict[str, int]]:
    """Export `model` to ONNX, quantize its MatMul/Gemm weights to int8 with ONNX Runtime's `quantize_dynamic`,
    write it atomically to `path` and open it; counts the Linear layers stored exactly / re-quantized.

    ONNX Runtime picks the scale max|w| / 127 per tensor (per output channel when `per_channel`), so 8-bit Q8BERT
    grids keep their codes; any Linear not on such a per-tensor grid makes the whole export per channel.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    linears = [m.weight.detach().float().cpu() for m in model.modules() if type(m) is nn.Linear]
    per_tensor = [exact_grid(w, per_channel=False, code_limits=(127,)) is not None for w in linears]
    per_channel = not all(per_tensor)
    exact = per_tensor if not per_channel else [exact_grid(w, True, code_limits=(127,)) is not None for w in linears]
    reduce_range = _needs_reduced_range()
    if reduce_range:  # 7-bit weights: no trained 8-bit code survives
        exact = [False] * len(exact)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".int8-") as tmp:
        fp32 = export_onnx(model, example, Path(tmp) / "fp32.onnx")
        int8 = Path(tmp) / path.name
        with _quiet_export():
            quantize_dynamic(
                str(fp32),
                str(int8),
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                reduce_range=reduce_range,
                op_types_to_quantize=["MatMul", "Gemm"],  # Linear layers; convolutions stay fp32 (as with torch)
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        os.replace(int8, path)
    counts = {"exact_layers": sum(exact), "requantized_layers": len(exact) - sum(exact)}
    return OnnxModel(path, threads), counts


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

    The onnxruntime export is kept as `folder/model.int8.onnx` (in a temporary folder when `folder` is None). A model
    the ONNX exporter cannot trace falls back to the torch backend, and `onnxruntime_failed` says why.
    """
    if next(model.parameters()).device.type != "cpu":
        return {"skipped": "the int8 dynamic kernels are CPU-only; this run trained on another device"}
    batch = next(iter(DataLoader(eval_set, batch_size=batch_size)))
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
        "latency_ms_fp32": latency["fp32"],
        "latency_ms_int8": latency["int8"],
        "latency_ratio": latency["int8"] / latency["fp32"],
    }


def wants_int8_export(members: Sequence[object]) -> str | None:
    """The int8 backend a compressor of the run asks for (`export_int8: true`, `int8_backend`), or None."""
    return next((getattr(m, "int8_backend", "torch") for m in members if getattr(m, "export_int8", False)), None)


def check_backend(backend: str) -> str:
    """`quantizer.int8_backend` must name a backend (checked when the quantizer is built, before training)."""
    if backend not in BACKENDS:
        allowed = f"must be one of {' | '.join(BACKENDS)}"
        raise ConfigError("quantizer.int8_backend", backend, allowed, problem="is unknown")
    return backend
