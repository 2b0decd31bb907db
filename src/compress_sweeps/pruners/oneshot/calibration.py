"""Calibration data for one-shot pruning: a seeded sample of training examples, and per-layer input statistics.

A one-shot method looks at what a layer computes on real inputs: SparseGPT needs the layer's Hessian of the
reconstruction error, H = 2 X^T X (in x in), Wanda only the L2 norm of every input feature over all calibration
tokens. Both are accumulated on the fly from forward-hook inputs, one batch at a time, so no activations are kept.
`X` has one row per token (Linear: the rows of `[batch, tokens, in]`, padding tokens dropped with the attention
mask) or per output position of a convolution (im2col columns, so the rows line up with the weight flattened to
`(out, in_channels * kernel)`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CALIBRATED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def token_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """`[batch, tokens]` booleans of the real (non-padding) tokens, when the batch has an attention mask."""
    mask = batch.get("attention_mask")
    return mask.bool() if mask is not None and mask.ndim == 2 else None


def calibration_problem(module: nn.Module) -> str | None:
    """Why the inputs of `module` cannot be turned into rows of X, or None when they can."""
    if not isinstance(module, CALIBRATED_TYPES):
        return f"{type(module).__name__} layers cannot be calibrated (only {[c.__name__ for c in CALIBRATED_TYPES]})"
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        if module.groups != 1:
            return f"grouped convolutions (groups={module.groups}) have one Hessian per group"
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            return "only convolutions with integer zero padding can be unfolded into im2col columns"
    return None


def input_rows(module: nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The rows of X (float32, `[rows, weight columns]`) that `module` multiplies its weight with on `inputs`.

    Linear: every token's features, without the padding tokens when `mask` (`[batch, tokens]`) fits the inputs.
    Conv: the im2col columns of every output position (SparseGPT's treatment of convolutions).
    """
    if isinstance(module, nn.Linear):
        if mask is not None and inputs.ndim == 3 and tuple(inputs.shape[:2]) == tuple(mask.shape) and not mask.all():
            inputs = inputs[mask.to(inputs.device)]
        return inputs.reshape(-1, inputs.shape[-1]).float()
    if isinstance(module, nn.Conv1d):
        inputs = inputs.unsqueeze(2)  # as a 1-row image: the same unfold as Conv2d with a (1, k) kernel
        kernel, dilation = (1, module.kernel_size[0]), (1, module.dilation[0])
        padding, stride = (0, module.padding[0]), (1, module.stride[0])
    else:
        kernel, dilation, padding, stride = module.kernel_size, module.dilation, module.padding, module.stride
    columns = F.unfold(inputs, kernel, dilation=dilation, padding=padding, stride=stride)  # [B, C*k, positions]
    return columns.transpose(1, 2).reshape(-1, columns.shape[1]).float()


class Hessian:
    """H = (2 / n) sum_rows x x^T of n input rows (SparseGPT's layer-wise Hessian), as a running mean.

    H is symmetric, so only its upper blocks of `block` x `block` are accumulated (10 of the 16 products for a
    1536-wide FFN output layer; about 30% less time than one full X^T X on a CPU); `matrix` mirrors them."""

    block = 384

    def __init__(self, columns: int, device: torch.device) -> None:
        self.upper = torch.zeros(columns, columns, device=device)
        self.rows = 0

    def add(self, rows: torch.Tensor) -> None:
        if len(rows) == 0:
            return
        total = self.rows + len(rows)
        self.upper.mul_(self.rows / total)  # keep the mean: no float32 overflow however many tokens
        scaled = rows * math.sqrt(2.0 / total)
        columns, b = self.upper.shape[0], self.block
        for i in range(0, columns, b):
            for j in range(i, columns, b):
                self.upper[i : i + b, j : j + b].addmm_(scaled[:, i : i + b].T, scaled[:, j : j + b])
        self.rows = total

    @property
    def matrix(self) -> torch.Tensor:
        """The whole symmetric H (the lower blocks copied from the upper ones)."""
        h = self.upper.clone()
        columns, b = h.shape[0], self.block
        for i in range(0, columns, b):
            for j in range(i + b, columns, b):
                h[j : j + b, i : i + b] = h[i : i + b, j : j + b].T
        return h


class FeatureNorms:
    """The L2 norm of every input feature over all rows seen: ||X_j||_2 (Wanda's activation term)."""

    def __init__(self, columns: int, device: torch.device) -> None:
        self.squares = torch.zeros(columns, dtype=torch.float64, device=device)
        self.rows = 0

    def add(self, rows: torch.Tensor) -> None:
        self.squares += rows.double().square().sum(dim=0)
        self.rows += len(rows)

    def norms(self) -> torch.Tensor:
        return self.squares.sqrt().float()
