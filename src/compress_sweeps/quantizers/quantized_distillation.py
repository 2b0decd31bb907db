"""Polino, Pascanu & Alistarh (ICLR 2018) quantized distillation: train with quantized weights, update full precision.

Every step the forward and backward passes run with the selected weights quantized by the uniform bucketed
quantizer (`bits`, `bucket_size`, `scaling`, optional stochastic rounding); the gradient then updates the
full-precision shadow weights (see `shadow.py`). The paper pairs this with a distillation loss from a
full-precision teacher: choose a distiller in the same run for that; alone it is quantization-aware training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.quantizers.fake_quant import SCALINGS, uniform_quantize
from compress_sweeps.quantizers.selection import select_layers
from compress_sweeps.quantizers.shadow import ShadowWeights
from compress_sweeps.schema import Regexes
from compress_sweeps.spec import CompressionSpec, QuantizationPromise
from compress_sweeps.weights.selection import DEFAULT_LAYER_TYPES, LayerSelection


class QuantizedDistillation:
    """Uniform bucketed weight quantization with full-precision shadow weights; see the module docstring."""

    def __init__(
        self,
        bits: int = 4,
        bucket_size: int | None = 256,
        scaling: str = "linear",
        stochastic_rounding: bool = False,
        skip_first_last: bool = True,
        keep_zeros: bool = True,
        layer_types: Sequence[str] = DEFAULT_LAYER_TYPES,
        include: Regexes = (),
        exclude: Regexes = (),
        seed: int = 0,
    ) -> None:
        if not 2 <= bits <= 16:
            raise ConfigError("quantizer.bits", bits, "must be an integer in [2, 16]")
        if bucket_size is not None and bucket_size < 2:
            raise ConfigError("quantizer.bucket_size", bucket_size, "must be >= 2 or null (one bucket per tensor)")
        if scaling not in SCALINGS:
            raise ConfigError("quantizer.scaling", scaling, f"must be one of {list(SCALINGS)}", problem="is unknown")
        self.bits, self.bucket_size, self.scaling = bits, bucket_size, scaling
        self.stochastic_rounding, self.skip_first_last = stochastic_rounding, skip_first_last
        self.keep_zeros = keep_zeros
        self.selection = LayerSelection(layer_types, include, exclude, "quantizer.")
        self.seed = seed
        self.generator: torch.Generator | None = None
        self.layers: dict[str, nn.Module] = {}
        self.shadow = ShadowWeights({})

    def attach(self, model: nn.Module, context: RunContext) -> None:
        self.layers = select_layers(model, self.selection, self.skip_first_last)
        self.shadow = ShadowWeights({f"{name}.weight": layer.weight for name, layer in self.layers.items()})
        # a dedicated generator keeps the stochastic rounding draws out of the data order's random stream
        self.generator = torch.Generator(device=context.device).manual_seed(self.seed)
        self.shadow.swap_in(self._quantize)

    def _quantize(self, name: str, weight: torch.Tensor, stochastic: bool | None = None) -> torch.Tensor:
        stochastic = self.stochastic_rounding if stochastic is None else stochastic
        return uniform_quantize(
            weight, self.bits, self.bucket_size, self.scaling, stochastic, self.keep_zeros, self.generator
        )

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        return loss

    def before_optimizer_step(self, step: int) -> None:
        self.shadow.restore()

    def after_optimizer_step(self, step: int) -> None:
        self.shadow.swap_in(self._quantize)

    def finalize(self, model: nn.Module) -> nn.Module:
        # the kept model is the deterministic rounding of the trained full-precision weights
        self.shadow.restore()
        self.shadow.swap_in(lambda name, weight: self._quantize(name, weight, stochastic=False))
        self.shadow.release()
        return model

    def state_dict(self) -> dict[str, Any]:
        """The stochastic rounding generator and the full-precision shadow weights."""
        return {"generator": self.generator.get_state(), "shadow": self.shadow.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.shadow.load_state_dict(state["shadow"])

    def spec(self) -> CompressionSpec:
        """2^bits evenly spaced levels per bucket; with `keep_zeros` (and no layer left out) zeros stay zeros."""
        weights = tuple(f"{name}.weight" for name in self.layers)
        promise = QuantizationPromise(weights, self.bits, self.bucket_size)
        keeps = self.keep_zeros and not self.skip_first_last  # skipped layers train freely, zeros and all
        return CompressionSpec(
            method="QuantizedDistillation", quantization=promise, keeps_zeros=keeps, shadows_weights=True
        )

    def check(self, total_steps: int, how: str = "") -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {"quant/bits": float(self.bits), "quant/layers": float(len(self.layers))}
