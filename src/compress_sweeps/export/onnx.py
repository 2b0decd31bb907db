"""The ONNX Runtime int8 backend: export a model to ONNX, quantize it with ONNX Runtime's `quantize_dynamic`, run it.

`torch.onnx.export` (the TorchScript exporter; Hugging Face models switched to eager attention, whose MatMul/Softmax
graph ONNX Runtime fuses), then int8 weights on every MatMul/Gemm (the Linear layers; convolutions stay fp32) and
uint8 activations quantized per batch at run time. At session creation ONNX Runtime fuses each DynamicQuantizeLinear
+ MatMulInteger + scale into one MatMulIntegerToFloat kernel (VNNI on x86), plus LayerNorm and GELU fusions.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import os
import platform
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from compress_sweeps.hooks import logits_of
from compress_sweeps.weights.grid import exact_grid

ONNX_FILE = "model.int8.onnx"  # the onnxruntime export, kept in the run folder for deployment
_OPSET = 17
# ONNX Runtime session fusions left out: with its SkipLayerNormalization kernel (residual Add + LayerNorm fused)
# MiniLM's int8 export ran slower than with the Add and LayerNormalization unfused: 100.5 vs 89.8 ms per batch of
# 32 x 64 tokens at 2 threads, 195.9 vs 175.5 ms at 1 (timed interleaved; AMD EPYC, ORT 1.32; docs/methods.md)
DISABLED_FUSIONS = ["SkipLayerNormFusion"]


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
        # threads spin between the operators of a call (waking a sleeping thread for each operator made the slim
        # CNN's session take 1.36-1.42 ms instead of 0.73-0.86, timed interleaved), and stop spinning when the call
        # returns: idle ORT threads would steal the cores from whatever runs next (the fp32 model timed beside it)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.path = str(path)
        self.session = ort.InferenceSession(
            self.path, options, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_FUSIONS
        )
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


def uniform_windows(size: int, out: int) -> tuple[int, int] | None:
    """(kernel, stride) of adaptive pooling from `size` to `out` when all its windows have one width and one step
    (7 -> 2: windows [0, 4) and [3, 7), kernel 4, stride 3), so that it is a plain pooling; None where they differ."""
    starts = [i * size // out for i in range(out)]
    ends = [-(-(i + 1) * size // out) for i in range(out)]
    widths = {end - start for start, end in zip(starts, ends, strict=True)}
    steps = {b - a for a, b in itertools.pairwise(starts)} or {1}
    return (widths.pop(), steps.pop()) if len(widths) == len(steps) == 1 else None


def _adaptive_avg_pool2d(g, input, output_size):  # noqa: A002 - the exporter's symbolic signature
    """ONNX has no adaptive pooling and the TorchScript exporter exports it only where the input size is a multiple
    of the output size; where the windows are still uniform (the ConvNet's 7x7 -> 2x2 on 28x28 images) it is an
    AveragePool. Anything else goes to the exporter's own symbolic, which says what it cannot export."""
    from torch.onnx import symbolic_helper, symbolic_opset9

    spatial = (symbolic_helper._get_tensor_sizes(input) or [])[2:]
    try:
        out = symbolic_helper._parse_arg(output_size, "is")
    except Exception:  # not a constant: the exporter's symbolic reports it
        out = []
    windows = [uniform_windows(n, o) for n, o in zip(spatial, out, strict=False) if n is not None]
    if len(windows) != 2 or None in windows:
        return symbolic_opset9.adaptive_avg_pool2d(g, input, output_size)
    kernel, stride = zip(*windows, strict=True)
    return g.op("AveragePool", input, kernel_shape_i=list(kernel), strides_i=list(stride))


@contextlib.contextmanager
def _uniform_adaptive_pooling(opset: int):
    """`_adaptive_avg_pool2d` in place of the exporter's symbolic for the duration of one export."""
    torch.onnx.register_custom_op_symbolic("aten::adaptive_avg_pool2d", _adaptive_avg_pool2d, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::adaptive_avg_pool2d", opset)


def export_onnx(model: nn.Module, example: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """`model` (a CPU copy; Hugging Face models in eager attention, the graph ORT fuses) as fp32 ONNX at `path`.

    Inputs are named and ordered as in `example`; the batch axis (and a token input's length) is dynamic.
    """
    copy_ = copy.deepcopy(model).cpu().eval()
    if hasattr(copy_, "set_attn_implementation"):
        copy_.set_attn_implementation("eager")
    inputs = {k: v.cpu() for k, v in example.items()}
    with _quiet_export(), _uniform_adaptive_pooling(_OPSET), torch.inference_mode():
        torch.onnx.export(  # the TorchScript exporter: ONNX Runtime's attention fusions match its graph
            _LogitsOf(copy_, list(inputs)).eval(),
            tuple(inputs.values()),
            str(path),
            dynamo=False,
            opset_version=_OPSET,
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
