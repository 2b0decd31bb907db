"""Post-training static int8 through ONNX Runtime (`export=onnxruntime_static`, which `quantizer=ptq_static`
selects): activation ranges calibrated once on training examples.

Where `onnx.to_int8_onnx` (dynamic) measures every activation's range per batch at run time, static
quantization fixes one scale per activation tensor from calibration batches (`quantize_static` with a
`CalibrationDataReader`), so the int8 model carries no range computation at inference, and convolutions are
quantized too. The graph is written in QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized op,
which ONNX Runtime fuses into integer kernels), weights signed 8-bit per output channel, activations unsigned
8-bit with a zero point (U8S8): the u8 x s8 dot products are x86's fast int8 path (VNNI), and on this project's
CPU a static MiniLM export ran 2.8 s per 32 x 128 batch as U8S8 against 4.9 s as S8S8 (ONNX Runtime's default),
under the same load. Without VNNI the weights get 7 bits (`reduce_range`), as in the dynamic export.

Dynamic axes: the exported graph keeps the batch and sequence axes dynamic, and that is safe for static
calibration, because every activation scale is per tensor (one number), not per position. What matters is that the
calibration batches look like the inputs at inference: the same tokenizer, the same `max_length` and the same
padding. Padded positions still produce hidden states whose ranges the calibration records; calibrating on
padded batches (as the tasks here encode them) matches evaluation on padded batches, while calibrating on unpadded
text and serving padded inputs (or the reverse) can leave ranges that clip.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from compress_sweeps.batching import first_batch
from compress_sweeps.errors import ConfigError
from compress_sweeps.export.int8 import compare_int8
from compress_sweeps.export.onnx import OnnxModel, _needs_reduced_range, _quiet_export, export_onnx
from compress_sweeps.schema import check_arguments
from compress_sweeps.tasks.sample import calibration_batches

STATIC_ONNX_FILE = "model.int8-static.onnx"
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
# Linear and Conv layers (activation x activation MatMuls stay float), and what sits between a CNN's convolutions:
# with ReLU (folded into the conv's output range), max- and average-pooling and Flatten quantized too, the activations
# stay uint8 from one conv to the next and ONNX Runtime runs the chain in NHWC int8 kernels, instead of dequantizing
# after every conv, pooling in float and quantizing again: cnn_teacher's static export 10.8 vs 14.3 ms (its slim
# model 6.7 vs 9.1), interleaved, at batch 32; MiniLM's graph is the same either way (none of these ops on floats).
OP_TYPES = ("MatMul", "Gemm", "Conv", "Relu", "MaxPool", "AveragePool", "Flatten")


def _reader(batches: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str]):
    """An ONNX Runtime CalibrationDataReader over the calibration batches, as numpy arrays, that `quantize_static`
    feeds to its calibrator one batch per `collect_data` (`set_range`, with `CalibStridedMinMax: 1`).

    ONNX Runtime's histogram calibrators (entropy, percentile) keep every calibrated activation of every batch they
    are given in one `collect_data` call before binning it: on SmolLM2-135M, 256 calibration examples of 128 tokens
    grew past 24 GiB and the kernel killed the run. Fed a batch at a time, each call bins its batch and drops it (the
    histograms merge across calls), so memory is that of one batch; min-max ranges merge by min and max, unchanged."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.all = [{n: batch[n].detach().cpu().numpy() for n in names} for batch in batches]
            self.rows = iter(self.all)

        def __len__(self) -> int:
            return len(self.all)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.rows = iter(self.all[start_index:end_index])

        def get_next(self) -> dict | None:
            return next(self.rows, None)

    return Batches()


def to_int8_onnx_static(
    model: nn.Module,
    calibration_batches: Sequence[Mapping[str, torch.Tensor]],
    path: str | Path,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    threads: int | None = None,
) -> tuple[OnnxModel, dict[str, int | str]]:
    """Export `model` to ONNX, quantize it statically with ranges from `calibration_batches` (dicts holding
    exactly the model's inputs), write it atomically to `path` and open it.

    Returns the session as an `OnnxModel` (`model(**inputs)` -> logits) and a few facts about the export.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    if calibrate_method not in CALIBRATE_METHODS:
        allowed = f"must be one of {' | '.join(CALIBRATE_METHODS)}"
        raise ConfigError("export.calibrate_method", calibrate_method, allowed, problem="is unknown")
    if not calibration_batches:
        raise ValueError("static int8 quantization needs at least one calibration batch")
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[calibrate_method]
    names = list(calibration_batches[0])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".int8-static-") as tmp:
        fp32 = export_onnx(model, calibration_batches[0], Path(tmp) / "fp32.onnx")
        graph_inputs = {i.name for i in onnx.load(str(fp32), load_external_data=False).graph.input}
        names = [n for n in names if n in graph_inputs]  # the exporter drops inputs the model never reads
        prepared = Path(tmp) / "prepared.onnx"
        int8 = Path(tmp) / path.name
        with _quiet_export():
            # ONNX shape inference + graph cleanup, as ORT advises (its symbolic shape inference fails on BERT graphs)
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(int8),
                _reader(calibration_batches, names),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(OP_TYPES),
                per_channel=per_channel,
                reduce_range=_needs_reduced_range(),
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                extra_options={
                    "MatMulConstBOnly": True,
                    "DefaultTensorType": onnx.TensorProto.FLOAT,
                    "CalibStridedMinMax": 1,  # one batch per collect_data, whatever the method (see _reader)
                },
            )
        os.replace(int8, path)
    graph = onnx.load(str(path)).graph
    facts = {
        "format": "QDQ U8S8",
        "calibrate_method": calibrate_method,
        "calibration_batches": len(calibration_batches),
        "calibration_examples": sum(len(next(iter(b.values()))) for b in calibration_batches),
        "int8_weights": sum(t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2 for t in graph.initializer),
        "quantized_activations": sum(node.op_type == "QuantizeLinear" for node in graph.node),
    }
    return OnnxModel(path, threads), facts


class StaticInt8Export:
    """`export=onnxruntime_static`: the statically quantized int8 ONNX model, calibrated on `calibration_examples`
    training examples drawn by `seed` (the same draw as the one-shot pruners' for the same seed and count),
    evaluated and timed against the fp32 model on an eval batch of `batch_size`; kept as
    `<run>/model.int8-static.onnx`. Returns `compression.int8_export` of results.json."""

    int8 = "static"  # activation ranges fixed by calibration

    def __init__(
        self,
        calibration_examples: Annotated[int, Field(ge=1)] = 256,
        calibration_batch_size: Annotated[int, Field(ge=1)] = 16,
        seed: Annotated[int, Field(ge=0)] = 0,
        calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax",
        per_channel: bool = True,
        batch_size: Annotated[int, Field(ge=1)] = 32,
    ) -> None:
        check_arguments(StaticInt8Export, {k: v for k, v in locals().items() if k != "self"}, "export.")
        self.examples, self.calibration_batch_size, self.seed = calibration_examples, calibration_batch_size, seed
        self.calibrate_method, self.per_channel, self.batch_size = calibrate_method, per_channel, batch_size

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
        if next(model.parameters()).device.type != "cpu":
            return {"skipped": "the int8 kernels are CPU-only; this run trained on another device"}
        if train_set is None:
            raise ValueError("export=onnxruntime_static calibrates on the training split: none was given")
        batches = calibration_batches(train_set, input_keys, self.examples, self.calibration_batch_size, self.seed)
        inputs = first_batch(eval_set, input_keys, self.batch_size)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(folder or tmp) / STATIC_ONNX_FILE
            int8, facts = to_int8_onnx_static(model, batches, path, self.per_channel, self.calibrate_method)
            measured = compare_int8(int8, model, evaluate, inputs, fp32_metrics, reference, timed)
        backend = f"ONNX Runtime quantize_static ({facts.pop('format')}, {self.calibrate_method} ranges)"
        file = {"file": STATIC_ONNX_FILE} if folder else {}
        return {"backend": backend, **facts, **file, **measured}
