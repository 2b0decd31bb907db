"""Quantizers checked numerically: levels per tensor/bucket, the int8 grid, EMA ranges, stochastic rounding,
straight-through gradients, pruned zeros kept, measured bits and size, and the int8 export."""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.export import Int8Export
from compress_sweeps.export import onnx as onnx_export
from compress_sweeps.export.int8 import to_int8
from compress_sweeps.export.onnx import OnnxModel, export_onnx, to_int8_onnx, uniform_windows
from compress_sweeps.hooks import RunContext
from compress_sweeps.models import ConvNet
from compress_sweeps.quantizers import DifferentiableQuantization, Q8Bert, QuantizedDistillation
from compress_sweeps.quantizers.fake_quant import (
    asymmetric_qparams,
    quantize_asymmetric,
    quantize_symmetric,
    ste,
    stochastic_round,
    symmetric_scale,
    uniform_quantize,
)
from compress_sweeps.quantizers.observers import EmaRange
from compress_sweeps.run.measure import quantized_storage
from compress_sweeps.weights.grid import group_rows

CONTEXT = RunContext(total_steps=5, num_labels=3, device=torch.device("cpu"))


def levels(t: torch.Tensor) -> int:
    return int(t.unique().numel())


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("bucket_size", [None, 64, 100])
@pytest.mark.parametrize("scaling", ["linear", "absmax"])
def test_uniform_quantizer_has_at_most_2_to_the_bits_levels_per_bucket(bits, bucket_size, scaling):
    weight = torch.randn(37, 53)
    quantized = uniform_quantize(weight, bits, bucket_size, scaling)
    rows = group_rows(quantized, bucket_size)
    assert max(levels(row) for row in rows) <= 2**bits
    if bucket_size is None and scaling == "linear":  # min and max of the tensor are levels themselves
        assert quantized.min() == pytest.approx(float(weight.min()), abs=1e-6)
        assert quantized.max() == pytest.approx(float(weight.max()), abs=1e-6)


def test_symmetric_int8_maps_max_abs_to_level_127():
    weight = torch.randn(64, 32)
    scale = symmetric_scale(weight, 8)
    quantized = quantize_symmetric(weight, scale, 8)
    codes = quantized / scale
    assert torch.allclose(codes, codes.round(), atol=1e-4) and float(codes.abs().max()) == pytest.approx(127.0)
    assert float(weight.abs().max() / scale) == pytest.approx(127.0)
    assert levels(quantized) <= 255 and (quantized == 0).sum() >= (weight == 0).sum()
    per_channel = symmetric_scale(weight, 8, per_channel=True)
    assert torch.allclose((weight.abs().amax(1, keepdim=True) / per_channel), torch.full((64, 1), 127.0))
    four = quantize_symmetric(weight, symmetric_scale(weight, 4), 4)
    assert levels(four) <= 15 and (four / symmetric_scale(weight, 4)).abs().max() == pytest.approx(7.0)


def test_ema_range_follows_the_formula():
    observer, decay = EmaRange(0.9), 0.9
    batches = [torch.tensor([-1.0, 2.0]), torch.tensor([-3.0, 1.0]), torch.tensor([0.5, 4.0])]
    low, high = -1.0, 2.0
    observer.observe(batches[0])
    for batch in batches[1:]:
        observer.observe(batch)
        low = decay * low + (1 - decay) * float(batch.min())
        high = decay * high + (1 - decay) * float(batch.max())
    assert float(observer.low) == pytest.approx(low) and float(observer.high) == pytest.approx(high)
    with pytest.raises(ValueError, match="quantizer.ema_decay"):
        EmaRange(1.0)


def test_asymmetric_uint8_represents_zero_exactly_and_stays_in_range():
    x = torch.linspace(-0.7, 3.1, 1000)
    scale, zero_point = asymmetric_qparams(x.min(), x.max(), 8)
    quantized = quantize_asymmetric(torch.cat([x, torch.zeros(1)]), scale, zero_point, 8)
    assert quantized[-1] == 0 and levels(quantized) <= 256
    assert (quantized - torch.cat([x, torch.zeros(1)])).abs().max() <= scale / 2 + 1e-6


def test_stochastic_rounding_is_unbiased():
    generator = torch.Generator().manual_seed(0)
    x = torch.tensor([0.3, -1.75, 2.5, 4.0])
    draws = torch.stack([stochastic_round(x, generator) for _ in range(20000)])
    assert torch.allclose(draws.mean(0), x, atol=0.02)
    weight = torch.randn(256)
    mean = torch.stack(
        [uniform_quantize(weight, 2, None, "linear", stochastic=True, generator=generator) for _ in range(4000)]
    ).mean(0)
    assert torch.allclose(mean, weight, atol=0.05)  # grid step here is ~2, so nearest rounding is off by ~0.5


def test_straight_through_estimator_passes_gradients():
    x = torch.randn(10, requires_grad=True)
    ste(x, torch.round(x * 3) / 3).mul(torch.arange(10.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(10.0))
    model = mlp()
    quantizer = Q8Bert()
    quantizer.attach(model, CONTEXT)
    inputs = torch.randn(8, 16, requires_grad=True)
    model(inputs).sum().backward()
    assert inputs.grad is not None and inputs.grad.abs().sum() > 0
    assert all(layer.weight.grad.abs().sum() > 0 for layer in quantizer.layers.values())


def train_steps(model: nn.Module, quantizer, masks: dict[str, torch.Tensor], steps: int = 4) -> nn.Module:
    """A few SGD steps driving the hooks as the trainer does, with a pattern-lock pruner's gradient masking."""
    quantizer.attach(model, CONTEXT)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    params = dict(model.named_parameters())
    for step in range(1, steps + 1):
        torch.nn.functional.cross_entropy(model(torch.randn(16, 16)), torch.randint(0, 3, (16,))).backward()
        for name, mask in masks.items():
            params[name].grad.mul_(mask)
        quantizer.before_optimizer_step(step)
        optimizer.step()
        optimizer.zero_grad()
        quantizer.after_optimizer_step(step)
    return quantizer.finalize(model)


QUANTIZERS = {
    "q8bert": lambda: Q8Bert(bits=8),
    "q8bert_4bit_per_channel": lambda: Q8Bert(bits=4, per_channel=True),
    "polino": lambda: QuantizedDistillation(bits=4, bucket_size=64, skip_first_last=False),
    "polino_stochastic_absmax": lambda: QuantizedDistillation(
        bits=2, bucket_size=None, scaling="absmax", stochastic_rounding=True, skip_first_last=False
    ),
    "differentiable": lambda: DifferentiableQuantization(bits=3, lr=1e-2, skip_first_last=False),
}


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_zeros_of_a_pruned_model_stay_zero_and_levels_are_bounded(name):
    model = mlp()
    masks = {}
    with torch.no_grad():
        for layer_name, param in model.named_parameters():
            if param.ndim == 2:
                masks[layer_name] = (torch.rand_like(param) > 0.5).float()
                param.mul_(masks[layer_name])
    quantizer = QUANTIZERS[name]()
    model = train_steps(model, quantizer, masks)
    bits = quantizer.bits
    bucket = getattr(quantizer, "bucket_size", None)
    for layer_name, mask in masks.items():
        weight = dict(model.named_parameters())[layer_name].detach()
        assert torch.all(weight[mask == 0] == 0), f"{layer_name}: pruned weights moved"
        if name == "q8bert_4bit_per_channel":
            assert max(levels(row) for row in weight) <= 2**bits
        else:
            assert max(levels(row) for row in group_rows(weight, bucket)) <= 2**bits
        assert quantized_storage(weight)[0] <= bits + (0 if name.startswith("q8bert") else 1)
    assert not getattr(quantizer, "handles", [])  # input hooks removed by finalize


def test_quantized_distillation_trains_full_precision_shadow_weights():
    model = mlp()
    quantizer = QuantizedDistillation(bits=2, bucket_size=None, skip_first_last=True)
    quantizer.attach(model, CONTEXT)
    assert list(quantizer.layers) == ["2"]  # first and last Linear kept in full precision
    assert levels(model[2].weight) <= 4 and levels(model[0].weight) == model[0].weight.numel()
    torch.nn.functional.cross_entropy(model(torch.randn(16, 16)), torch.randint(0, 3, (16,))).backward()
    quantizer.before_optimizer_step(1)
    assert levels(model[2].weight) > 4  # the optimizer sees the full-precision values


def test_measured_bits_and_size():
    weight = torch.randn(128, 256)
    assert quantized_storage(weight) == (32, weight.numel() * 4)
    pruned = weight * (torch.rand_like(weight) > 0.9)
    assert quantized_storage(pruned)[0] == 32
    q8 = quantize_symmetric(weight, symmetric_scale(weight, 8), 8)
    assert quantized_storage(q8) == (8, weight.numel() + 8)
    polino = uniform_quantize(weight, 4, 256, "linear")
    assert quantized_storage(polino) == (4, weight.numel() // 2 + 8 * weight.numel() // 256)


def test_int8_export_stores_the_trained_grid_exactly():
    model = mlp()
    quantizer = Q8Bert(quantize_activations=False)
    quantizer.attach(model, CONTEXT)
    model = quantizer.finalize(model).eval()
    int8, counts = to_int8(model)
    assert counts == {"exact_layers": 3, "requantized_layers": 0}
    weight = int8[2].weight().dequantize()
    assert torch.equal(weight, model[2].weight.detach())
    x = torch.randn(32, 16)
    assert torch.allclose(int8(x), model(x), atol=0.05)


def onnx_weights(path) -> dict[str, torch.Tensor]:
    """The int8 weights of an ONNX Runtime export, dequantized: {float weight name: codes * scale}."""
    graph = onnx.load(str(path)).graph
    tensors = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    weights = {}
    for name, codes in tensors.items():
        if name.endswith("_quantized") and codes.dtype == torch.int8:
            base = name.removesuffix("_quantized")
            scale = tensors[f"{base}_scale"].float()
            weights[base] = codes.float() * (scale if scale.ndim == 0 else scale[None, :])  # [in, out] layout
    return weights


def test_onnxruntime_export_keeps_the_trained_int8_codes(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "_needs_reduced_range", lambda: False)  # a VNNI CPU (this one may not be)
    model = mlp()
    quantizer = Q8Bert(quantize_activations=False)
    quantizer.attach(model, CONTEXT)
    model = quantizer.finalize(model).eval()
    x = torch.randn(32, 16)
    int8, counts = to_int8_onnx(model, {"input": x}, tmp_path / "model.int8.onnx")  # Sequential.forward(input)
    assert counts == {"exact_layers": 3, "requantized_layers": 0}
    stored = sorted(onnx_weights(tmp_path / "model.int8.onnx").values(), key=lambda w: w.numel())
    trained = sorted((m.weight.detach().T for m in model if isinstance(m, nn.Linear)), key=lambda w: w.numel())
    assert len(stored) == 3
    for got, want in zip(stored, trained, strict=True):  # same codes and scale: equal up to float rounding
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-7)
    assert torch.allclose(int8(input=x), model(x), atol=0.05)  # activations are quantized per batch at run time
    assert int8(input=x[:5]).shape == (5, 3)  # the batch size is dynamic


@pytest.mark.parametrize(("bits", "pre_vnni"), [(4, False), (8, True)])
def test_onnxruntime_export_counts_requantized_layers(tmp_path, monkeypatch, bits, pre_vnni):
    """4-bit grids (7 codes a side) are not ONNX Runtime's max|w| / 127 grid; a CPU without VNNI gets 7-bit weights."""
    monkeypatch.setattr(onnx_export, "_needs_reduced_range", lambda: pre_vnni)
    model = mlp()
    quantizer = Q8Bert(bits=bits, quantize_activations=False)
    quantizer.attach(model, CONTEXT)
    model = quantizer.finalize(model).eval()
    int8, counts = to_int8_onnx(model, {"input": torch.randn(4, 16)}, tmp_path / "model.int8.onnx")
    assert counts == {"exact_layers": 0, "requantized_layers": 3}
    x = torch.randn(8, 16)
    assert torch.allclose(int8(input=x), model(x), atol=0.1)


def test_uniform_adaptive_pooling_windows():
    assert uniform_windows(7, 2) == (4, 3)  # [0, 4) and [3, 7)
    assert uniform_windows(8, 2) == (4, 4) and uniform_windows(10, 3) == (4, 3) and uniform_windows(3, 3) == (1, 1)
    assert uniform_windows(5, 3) is None  # widths 2, 3, 2


@pytest.mark.parametrize("size", [28, 20, 8])
def test_cnn_exports_to_onnx_with_its_adaptive_pooling(tmp_path, size):
    """The ConvNet pools its last maps (7x7 on 28x28 images) to 2x2: exported as an AveragePool, same logits."""
    model = ConvNet(10).eval()
    images = {"pixel_values": torch.randn(3, 1, size, size)}
    onnx_model = OnnxModel(export_onnx(model, images, tmp_path / "cnn.onnx"))
    with torch.no_grad():
        torch.testing.assert_close(onnx_model(**images), model(**images), atol=1e-5, rtol=1e-5)


def test_adaptive_pooling_with_uneven_windows_still_fails_to_export(tmp_path):
    model = nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten())
    with pytest.raises(Exception, match="not factor of input size"):
        export_onnx(model, {"input": torch.randn(1, 2, 5, 5)}, tmp_path / "pool.onnx")


@pytest.mark.parametrize(
    ("factory", "key", "value"),
    [
        (lambda: Q8Bert(bits=9), "quantizer.bits", 9),
        (lambda: Q8Bert(start_step=-1), "quantizer.start_step", -1),
        (lambda: Q8Bert(include=["("]), "quantizer.include", ["("]),
        (lambda: QuantizedDistillation(scaling="log"), "quantizer.scaling", "log"),
        (lambda: QuantizedDistillation(bucket_size=1), "quantizer.bucket_size", 1),
        (lambda: QuantizedDistillation(layer_types=["LSTM"]), "quantizer.layer_types", ["LSTM"]),
        (lambda: DifferentiableQuantization(lr=0), "quantizer.lr", 0),
        (lambda: Int8Export(backend="tensorrt"), "export.backend", "tensorrt"),
        (lambda: Int8Export(batch_size=0), "export.batch_size", 0),
    ],
)
def test_bad_values_fail_naming_the_key(factory, key, value):
    with pytest.raises(ConfigError) as caught:
        factory()
    assert (caught.value.key, caught.value.value) == (key, value)
