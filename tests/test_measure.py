"""Storage figures counted from tensors: a sparse tensor is priced as bitmask + non-zeros when that is smaller."""

from __future__ import annotations

import torch
from torch import nn

from compress_sweeps.run.measure import compression_report, sparse_storage


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
