"""Full-precision shadow weights: the forward/backward sees quantized weights, the optimizer updates full precision.

Between optimizer steps each selected parameter holds its quantized values, so the forward pass, the backward
pass and any evaluation in between run the quantized model; just before `optimizer.step()` the full-precision
values are put back, and the gradient (taken at the quantized point) updates them. This is Polino et al.'s
quantized training and, for a rounding quantizer, exactly the straight-through estimator. Parameters are never
replaced, only their values, so a pruner holding the same parameters keeps working (and its masks re-applied to
the full-precision values are seen by the next quantization).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class ShadowWeights:
    """Swap quantized values in and full-precision values back for a set of named parameters."""

    def __init__(self, params: dict[str, nn.Parameter]) -> None:
        self.params = params
        self.full: dict[str, torch.Tensor] = {}

    @property
    def quantized(self) -> bool:
        return bool(self.full)

    @torch.no_grad()
    def swap_in(self, quantize: Callable[[str, torch.Tensor], torch.Tensor]) -> None:
        """Keep the current full-precision values, then overwrite each parameter with `quantize(name, values)`."""
        for name, param in self.params.items():
            self.full[name] = param.detach().clone()
            param.copy_(quantize(name, self.full[name]))

    @torch.no_grad()
    def restore(self) -> None:
        """Put the full-precision values back (gradients are left as they are, for the optimizer)."""
        for name, param in self.params.items():
            if name in self.full:
                param.copy_(self.full[name])
        self.full.clear()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The full-precision values while quantized ones are swapped in (the model's state dict holds the latter)."""
        return dict(self.full)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.full = {name: value.to(self.params[name].device) for name, value in state.items()}

    def release(self) -> None:
        """Forget the full-precision copies, leaving the quantized values in place (the fold of `finalize`)."""
        self.full.clear()
