"""The small quantize/dequantize functions every quantizer here is built from (no `torch.ao.quantization`).

Each function returns *dequantized* values (fp32 on the quantization grid), which is what training and the folded
`model.safetensors` hold; the integer codes are implied by the grid and recovered by the int8 export.
"""

from __future__ import annotations

import torch

from compress_sweeps.weights.grid import group_rows

SCALINGS = ("linear", "absmax")


def ste(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: forward gives `quantized`, backward passes the gradient to `x` unchanged."""
    return x + (quantized - x).detach()


def stochastic_round(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round up with probability equal to the fractional part, so E[round(x)] = x (Polino et al., 2018)."""
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.floor(x + noise)


def symmetric_scale(weight: torch.Tensor, bits: int, per_channel: bool = False) -> torch.Tensor:
    """Scale mapping max |w| (per tensor, or per output channel = dim 0) to the largest level 2^(bits-1) - 1."""
    qmax = 2 ** (bits - 1) - 1
    if per_channel:
        amax = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)
        amax = amax.reshape(-1, *([1] * (weight.ndim - 1)))
    else:
        amax = weight.detach().abs().amax()
    # an all-zero tensor (or channel) keeps scale 1: every weight rounds to level 0, i.e. stays exactly zero
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


def quantize_symmetric(weight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed symmetric grid {-qmax..qmax} * scale: 2^bits - 1 levels, zero exactly representable."""
    qmax = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(weight / scale), -qmax, qmax) * scale


def asymmetric_qparams(low: torch.Tensor, high: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point of an unsigned `bits` grid covering [low, high] (widened to contain 0)."""
    qmax = 2**bits - 1
    low, high = torch.clamp(low, max=0.0), torch.clamp(high, min=0.0)
    scale = torch.clamp((high - low) / qmax, min=torch.finfo(torch.float32).tiny)
    zero_point = torch.clamp(torch.round(-low / scale), 0, qmax)
    return scale, zero_point


def quantize_asymmetric(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned affine grid: codes 0..2^bits - 1, value = (code - zero_point) * scale; 0 maps to 0 exactly."""
    codes = torch.clamp(torch.round(x / scale) + zero_point, 0, 2**bits - 1)
    return (codes - zero_point) * scale


def uniform_quantize(
    weight: torch.Tensor,
    bits: int,
    bucket_size: int | None = None,
    scaling: str = "linear",
    stochastic: bool = False,
    keep_zeros: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Polino et al.'s uniform quantizer Q(v) = sc^-1(q(sc(v))), one scaling per bucket of consecutive values.

    `linear` scales a bucket to [0, 1] with its min and max (alpha = max - min, beta = min); `absmax` maps
    [-max|v|, max|v|] to [0, 1]. Each bucket gets at most 2^bits levels. With `keep_zeros`, exact zeros (e.g.
    pruned weights) stay zero and a bucket holding zeros spends one of its 2^bits levels on them.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {list(SCALINGS)}, got '{scaling}'")
    rows = group_rows(weight.detach(), bucket_size)  # one row per bucket (the last padded with its last value)
    if scaling == "linear":
        beta = rows.amin(dim=1, keepdim=True)
        alpha = rows.amax(dim=1, keepdim=True) - beta
    else:
        amax = rows.abs().amax(dim=1, keepdim=True)
        beta, alpha = -amax, 2 * amax
    zeros = rows == 0
    # number of intervals s: 2^bits points, one fewer when a level is reserved for the exact zeros
    steps = torch.full_like(alpha, 2**bits - 1)
    if keep_zeros:
        steps = steps - zeros.any(dim=1, keepdim=True).to(steps.dtype)
    safe_alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    scaled = (rows - beta) / safe_alpha * steps
    levels = stochastic_round(scaled, generator) if stochastic else torch.round(scaled)
    out = torch.clamp(levels, min=torch.zeros_like(steps), max=steps) / steps * safe_alpha + beta
    out = torch.where(alpha > 0, out, rows)  # a constant bucket is already a single level
    if keep_zeros:
        out = torch.where(zeros, torch.zeros_like(out), out)
    return out.reshape(-1)[: weight.numel()].reshape(weight.shape).to(weight.dtype)
