"""Q8BERT-style quantization-aware training (Zafrir et al., 2019; Intel Model Compression Research Package).

Selected Linear layers train with fake-quantized weights (symmetric, per tensor or per output channel) and
fake-quantized inputs (asymmetric unsigned, range from an exponential moving average of batch min/max), with
straight-through gradients. `finalize` folds the weights to their quantized values and removes the input hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.quantizers.fake_quant import (
    asymmetric_qparams,
    quantize_asymmetric,
    quantize_symmetric,
    ste,
    symmetric_scale,
)
from compress_sweeps.quantizers.observers import EmaRange
from compress_sweeps.quantizers.selection import select_layers
from compress_sweeps.quantizers.shadow import ShadowWeights
from compress_sweeps.schema import Regexes
from compress_sweeps.spec import CompressionSpec, QuantizationPromise
from compress_sweeps.weights.selection import LayerSelection


class Q8Bert:
    """Fake-quantize the weights and inputs of Linear layers from `start_step` on; see the module docstring."""

    def __init__(
        self,
        bits: int = 8,
        per_channel: bool = False,
        quantize_activations: bool = True,
        activation_bits: int = 8,
        ema_decay: float = 0.99,
        start_step: int = 0,
        include: Regexes = (),
        exclude: Regexes = (),
    ) -> None:
        if not 2 <= bits <= 8:
            raise ConfigError("quantizer.bits", bits, "must be an integer in [2, 8]")
        if not 2 <= activation_bits <= 8:
            raise ConfigError("quantizer.activation_bits", activation_bits, "must be an integer in [2, 8]")
        if start_step < 0:
            raise ConfigError("quantizer.start_step", start_step, "must be an integer step >= 0")
        EmaRange(ema_decay)  # validates quantizer.ema_decay now, not at attach
        self.bits, self.per_channel = bits, per_channel
        self.quantize_activations, self.activation_bits = quantize_activations, activation_bits
        self.ema_decay, self.start_step = ema_decay, start_step
        self.selection = LayerSelection(("Linear",), include, exclude, "quantizer.")
        self.layers: dict[str, nn.Module] = {}
        self.observers: dict[str, EmaRange] = {}
        self.handles: list[Any] = []
        self.shadow = ShadowWeights({})
        self.active = False

    def attach(self, model: nn.Module, context: RunContext) -> None:
        self.check(context.total_steps)
        self.layers = select_layers(model, self.selection)
        self.shadow = ShadowWeights({f"{name}.weight": layer.weight for name, layer in self.layers.items()})
        if self.quantize_activations:
            for name, layer in self.layers.items():
                self.observers[name] = EmaRange(self.ema_decay)
                self.handles.append(layer.register_forward_pre_hook(self._input_hook(name)))
        self.active = self.start_step == 0
        if self.active:
            self.shadow.swap_in(self._quantize_weight)

    def _quantize_weight(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return quantize_symmetric(weight, symmetric_scale(weight, self.bits, self.per_channel), self.bits)

    def _input_hook(self, name: str):
        observer = self.observers[name]

        def hook(module: nn.Module, args: tuple) -> tuple | None:
            x = args[0]
            if module.training:  # ranges are collected during the delay too, so they are warm at start_step
                observer.observe(x)
            if not self.active or not observer.ready:
                return None
            scale, zero_point = asymmetric_qparams(observer.low, observer.high, self.activation_bits)
            return (ste(x, quantize_asymmetric(x, scale, zero_point, self.activation_bits)), *args[1:])

        return hook

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        return loss

    def before_optimizer_step(self, step: int) -> None:
        self.shadow.restore()

    def after_optimizer_step(self, step: int) -> None:
        # the next forward (training step `step + 1`) is the first quantized one when step + 1 == start_step
        self.active = self.active or step + 1 >= self.start_step
        if self.active:
            self.shadow.swap_in(self._quantize_weight)

    def finalize(self, model: nn.Module) -> nn.Module:
        if not self.shadow.quantized:
            self.shadow.swap_in(self._quantize_weight)
        self.shadow.release()
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        return model

    def state_dict(self) -> dict[str, Any]:
        """Whether quantization started, the activation ranges and the full-precision shadow weights."""
        observers = {name: observer.state_dict() for name, observer in self.observers.items()}
        return {"active": self.active, "observers": observers, "shadow": self.shadow.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.active = state["active"]
        for name, observer in self.observers.items():
            observer.load_state_dict(state["observers"][name], self.layers[name].weight.device)
        self.shadow.load_state_dict(state["shadow"])

    def spec(self) -> CompressionSpec:
        """`bits`-bit symmetric weights, one scale per tensor (or output row with `per_channel`)."""
        group = "row" if self.per_channel else None
        weights = tuple(f"{name}.weight" for name in self.layers)
        return CompressionSpec(
            method="Q8Bert", quantization=QuantizationPromise(weights, self.bits, group), shadows_weights=True
        )

    def check(self, total_steps: int, how: str = "") -> None:
        if self.start_step > total_steps:
            raise ConfigError(
                "quantizer.start_step",
                self.start_step,
                f"must be <= {total_steps}, the run's optimizer steps{f' ({how})' if how else ''}; else nothing is "
                "quantized",
                problem="is beyond the run",
            )

    def metrics(self) -> dict[str, float]:
        ready = [o for o in self.observers.values() if o.ready]
        out = {"quant/bits": float(self.bits), "quant/active": float(self.active), "quant/layers": len(self.layers)}
        if ready:
            out["quant/act_range_mean"] = float(sum(float(o.high - o.low) for o in ready) / len(ready))
        return out
