"""Activation range observers: exponential moving averages of each batch's min and max (Q8BERT, Jacob et al.)."""

from __future__ import annotations

import torch

from compress_sweeps.distributed import global_min_max
from compress_sweeps.errors import ConfigError


class EmaRange:
    """Running [low, high] of a tensor stream: the first batch sets it, then x_t = d * x_(t-1) + (1 - d) * batch_x.

    The range only moves when `observe` is called (in training); evaluation and the int8 export read it frozen.
    In a distributed run the batch min/max are taken over all ranks' batches, so every rank keeps the same range.
    """

    def __init__(self, decay: float = 0.9999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError("quantizer.ema_decay", decay, "must be in [0, 1)")
        self.decay = decay
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None

    @property
    def ready(self) -> bool:
        return self.low is not None

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        return {"low": self.low, "high": self.high}

    def load_state_dict(self, state: dict[str, torch.Tensor | None], device: torch.device) -> None:
        self.low, self.high = (None if v is None else v.to(device) for v in (state["low"], state["high"]))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        low, high = global_min_max(x.detach().amin().float(), x.detach().amax().float())
        if self.low is None:
            self.low, self.high = low, high
        else:
            self.low = self.decay * self.low + (1.0 - self.decay) * low
            self.high = self.decay * self.high + (1.0 - self.decay) * high
