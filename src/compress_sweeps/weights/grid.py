"""Which int8 grid a folded weight already lies on, so an int8 export can store its codes exactly."""

from __future__ import annotations

from collections.abc import Sequence

import torch

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
