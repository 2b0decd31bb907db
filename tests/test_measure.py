"""What a run measures from the finalized model (run/measure.py), counted on tiny hand-built models: exact sparsity
over the prunable layers, pattern re-checks, parameter counts, storage size at the measured bit-width (fp32, fp16,
8-bit and 4-bit grids, int8 tensors), the sparse encoding, and `measure`'s structure and latency entries."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress_sweeps.run.measure import (
    MEASURED,
    TIMED,
    compression_report,
    measure,
    prunable_weights,
    quantized_storage,
    sparse_storage,
)
from compress_sweeps.spec import CompressionSpec, SparsityPromise


class Toy(nn.Module):
    """A Linear body (prunable), a Conv2d (prunable) and a classifier head (left dense by the default selection)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Linear(8, width)
        self.conv = nn.Conv2d(1, 2, kernel_size=2)
        self.classifier = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.body(x)))


def toy(width: int = 8) -> Toy:
    torch.manual_seed(0)
    return Toy(width)


def on_grid(levels: int, shape: tuple[int, int] = (64, 64), step: float = 0.01) -> torch.Tensor:
    """Random non-zero integer codes in [-levels, levels] times `step`, each row holding both ends of the range, so
    every row and bucket needs as many bits as the whole tensor (no finer grouping is cheaper)."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(-levels, levels + 1, shape, generator=generator)
    codes[codes == 0] = 1
    codes[:, 0], codes[:, 1] = -levels, levels
    return codes.float() * step


def linear_with(weight: torch.Tensor) -> nn.Sequential:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False).to(weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return nn.Sequential(layer)


def test_sparse_storage_is_bitmask_plus_nonzeros_when_smaller():
    weight = torch.randn(64, 64)
    assert sparse_storage(weight, 32, weight.numel() * 4) == weight.numel() * 4  # dense: nothing to gain
    weight[:, :48] = 0  # 75% zeros
    assert sparse_storage(weight, 32, weight.numel() * 4) == 64 * 64 // 8 + 64 * 16 * 4


def test_report_prices_pruned_layers_sparse():
    model = nn.Sequential(nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False))
    with torch.no_grad():
        model[0].weight[:, :48] = 0
    report = compression_report(model)
    assert report["size_bytes"] == 2 * 64 * 64 * 4
    assert report["sparse_size_bytes"] == (64 * 64 // 8 + 64 * 16 * 4) + 64 * 64 * 4
    assert report["sparsity"] == 0.375 and report["layers"]["0.weight"] == 0.75


def test_default_prunable_weights_leave_the_classifier_out():
    assert list(prunable_weights(toy())) == ["body.weight", "conv.weight"]


def test_sparsity_is_recounted_exactly_per_layer_and_overall():
    model = toy()
    with torch.no_grad():
        model.body.weight[:3] = 0  # 24 of 64
        model.conv.weight[0] = 0  # 4 of 8
        model.classifier.weight[0] = 0  # 8 of 16, outside the prunable layers
    report = compression_report(model)
    assert report["layers"] == {"body.weight": 24 / 64, "conv.weight": 4 / 8}
    assert report["sparsity"] == (24 + 4) / (64 + 8)
    total = (64 + 8) + (8 + 2) + (16 + 2)
    assert (report["total_params"], report["nonzero_params"]) == (total, total - 24 - 4 - 8)
    assert report["pattern"] is None and "pattern_holds" not in report


def test_named_weights_replace_the_default_selection():
    model = toy()
    with torch.no_grad():
        model.classifier.weight[0] = 0
    report = compression_report(model, weights={"classifier.weight": model.classifier.weight})
    assert report["layers"] == {"classifier.weight": 0.5} and report["sparsity"] == 0.5


def test_a_dense_fp32_model_is_32_bits_at_4_bytes_a_value():
    report = compression_report(toy())
    assert report["bits"] == 32 and report["layer_bits"] == {"body.weight": 32, "conv.weight": 32}
    assert report["size_bytes"] == report["sparse_size_bytes"] == 4 * report["total_params"]
    assert set(MEASURED) - set(TIMED) <= set(report)  # every figure a sweep may optimize, bar the timed ones


def test_fp16_weights_count_16_bits_at_2_bytes():
    report = compression_report(toy().half())
    assert report["bits"] == 16 and report["size_bytes"] == 2 * report["total_params"]


@pytest.mark.parametrize("levels, bits", [(127, 8), (7, 4), (1, 1)])
def test_a_weight_on_a_uniform_grid_is_stored_at_its_bit_width_plus_one_scale_and_offset(levels, bits):
    weight = on_grid(levels)
    assert quantized_storage(weight) == (bits, 64 * 64 * bits // 8 + 8)
    report = compression_report(linear_with(weight))
    assert report["bits"] == bits and report["layer_bits"] == {"0.weight": bits}
    assert report["size_bytes"] == 64 * 64 * bits // 8 + 8  # fp32: 64 * 64 * 4
    assert report["sparsity"] == 0.0


def test_a_pruned_8_bit_weight_is_a_bitmask_plus_its_nonzero_codes():
    weight = on_grid(127)
    weight[:, 2:50] = 0  # 48 of 64 per row; the zeros take one more level: 255 grid points + 0 is still 8 bits
    report = compression_report(linear_with(weight))
    assert report["bits"] == 8 and report["sparsity"] == 0.75
    assert report["size_bytes"] == 64 * 64 + 8
    assert report["sparse_size_bytes"] == 64 * 64 // 8 + 64 * 16 + 8


def test_a_weight_off_any_grid_stays_at_full_precision():
    weight = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    assert quantized_storage(weight) == (32, 64 * 64 * 4)
    assert quantized_storage(weight.half()) == (16, 64 * 64 * 2)
    assert quantized_storage(torch.ones(64, dtype=torch.float32)) == (32, 64 * 4)  # 1-D (a bias): kept as is


def test_int8_tensors_count_one_byte_and_tied_weights_count_once():
    model = nn.Sequential(nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False))
    model[1].weight = model[0].weight  # tied
    model.register_buffer("codes", torch.zeros(100, dtype=torch.int8))
    report = compression_report(model)
    assert report["total_params"] == 64 * 64
    assert report["size_bytes"] == 64 * 64 * 4 + 100


def two_four(rows: int = 8, cols: int = 8) -> torch.Tensor:
    """A weight with exactly 2 non-zeros in every run of 4 input columns."""
    weight = torch.arange(1, rows * cols + 1, dtype=torch.float32).reshape(rows, cols)
    weight[:, 0::4] = 0
    weight[:, 1::4] = 0
    return weight


def test_a_pattern_is_rechecked_and_a_broken_layer_is_named():
    model = toy()
    with torch.no_grad():
        model.body.weight.copy_(two_four())
    patterns = {"body.weight": "2:4"}
    report = compression_report(model, patterns=patterns)
    assert report["pattern"] == "2:4" and report["pattern_holds"] and report["pattern_violations"] == []
    assert report["layers"] == {"body.weight": 0.5} and report["sparsity"] == 0.5  # only the named weights
    with torch.no_grad():
        model.body.weight[0, 0] = 1.0  # three non-zeros in the first run of row 0
    report = compression_report(model, patterns=patterns)
    assert not report["pattern_holds"] and report["pattern_violations"] == ["body.weight"]


def test_layers_with_different_patterns_report_each_one():
    model = toy()
    with torch.no_grad():
        model.body.weight.copy_(two_four())
        model.classifier.weight[0] = 0  # one whole output row: a `channel` pattern
    patterns = {"body.weight": "2:4", "classifier.weight": "channel"}
    report = compression_report(model, patterns=patterns)
    assert report["pattern"] == patterns and report["pattern_holds"]
    assert report["sparsity"] == (32 + 8) / (64 + 16)
    with torch.no_grad():
        model.classifier.weight[1, 0] = 0  # a lone zero: not a whole channel
    assert compression_report(model, patterns=patterns)["pattern_violations"] == ["classifier.weight"]


def eval_set(n: int = 4) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(8, generator=generator), "labels": torch.tensor(i % 2)} for i in range(n)]


def test_measure_counts_the_spec_patterns_and_records_the_specs():
    model = toy()
    with torch.no_grad():
        model.body.weight.copy_(two_four())
    spec = CompressionSpec("toy 2:4", sparsity=(SparsityPromise({"body.weight": "2:4"}, 0.5),))
    report = measure(model, eval_set(), ["x"], [spec], reference=toy(), timed=False)
    assert report["pattern"] == "2:4" and report["pattern_holds"] and report["sparsity"] == 0.5
    assert report["spec"] == [spec.to_dict()]
    assert "structure" not in report and "latency" not in report  # same shapes, no structure promised, untimed


def test_measure_without_specs_counts_the_default_layers():
    report = measure(toy(), eval_set(), ["x"])
    assert report["spec"] == [] and set(report["layers"]) == {"body.weight", "conv.weight"}
    assert "structure" not in report and "latency" not in report  # no reference


def test_measure_reports_changed_shapes_and_latency_against_the_reference():
    report = measure(toy(width=4), eval_set(), ["x"], reference=toy(width=8), timed=True)
    structure = report["structure"]
    assert structure["layers"] == {"body": {"kind": "width", "kept": 4, "total": 8}}
    assert structure["params"] == {"model_before": 72 + 10 + 18, "model_after": 36 + 10 + 10}
    latency = report["latency"]
    assert {latency["batch_1"]["batch"], latency["batch_4"]["batch"]} == {1, 4}  # batch 32 capped at the split
    assert report["speedup"] == latency["batch_4"]["speedup"] and report["latency_ratio"] == latency["batch_4"]["ratio"]
    assert set(TIMED) <= set(report)
