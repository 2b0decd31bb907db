"""Polino, Pascanu & Alistarh (ICLR 2018) differentiable quantization: learn where the quantization points sit.

Each selected layer gets 2^bits points, initialised at equally spaced quantiles of its weights; every weight is
assigned to its nearest point and the layer computes with those point values. The loss gradient reaches a point
as the sum of the gradients of the weights assigned to it, and the points move by Adam. The full-precision
weights stay fixed (they only decide the assignment), as in the paper; pair it with a distiller for the paper's
loss. A layer holding exact zeros (pruned) pins one point at 0, so its zeros stay zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.quantizers.selection import select_layers
from compress_sweeps.quantizers.shadow import ShadowWeights
from compress_sweeps.schema import Regexes
from compress_sweeps.spec import CompressionSpec, QuantizationPromise
from compress_sweeps.weights.selection import DEFAULT_LAYER_TYPES, LayerSelection


def quantile_points(weight: torch.Tensor, count: int, pin_zero: bool) -> torch.Tensor:
    """`count` points at the (i + 0.5) / count quantiles of `weight`; with `pin_zero` the first one is 0."""
    learned = count - 1 if pin_zero else count
    flat = weight.detach().float().reshape(-1)
    if flat.numel() > 2**24:  # torch.quantile's input limit: a strided sample gives the same quantiles closely
        flat = flat[:: flat.numel() // 2**24 + 1]
    probs = (torch.arange(learned, device=flat.device, dtype=flat.dtype) + 0.5) / learned
    points = torch.quantile(flat, probs)
    return torch.cat([points.new_zeros(1), points]) if pin_zero else points


def nearest(weight: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Index of the nearest point for every weight (by binary search over the sorted points)."""
    order = torch.argsort(points)
    sorted_points = points[order]
    mids = (sorted_points[1:] + sorted_points[:-1]) / 2
    return order[torch.bucketize(weight, mids)]


class DifferentiableQuantization:
    """Learned non-uniform quantization points per layer; see the module docstring."""

    def __init__(
        self,
        bits: int = 4,
        lr: float = 1.0e-4,
        skip_first_last: bool = True,
        layer_types: Sequence[str] = DEFAULT_LAYER_TYPES,
        include: Regexes = (),
        exclude: Regexes = (),
    ) -> None:
        if not 1 <= bits <= 8:
            raise ConfigError("quantizer.bits", bits, "must be an integer in [1, 8]")
        if lr <= 0:
            raise ConfigError("quantizer.lr", lr, "must be > 0")
        self.bits, self.lr, self.skip_first_last = bits, lr, skip_first_last
        self.selection = LayerSelection(layer_types, include, exclude, "quantizer.")
        self.points: dict[str, torch.Tensor] = {}
        self.assignment: dict[str, torch.Tensor] = {}
        self.pinned: dict[str, bool] = {}
        self.shadow = ShadowWeights({})
        self.optimizer: torch.optim.Optimizer | None = None

    def attach(self, model: nn.Module, context: RunContext) -> None:
        layers = select_layers(model, self.selection, self.skip_first_last)
        params = {f"{name}.weight": layer.weight for name, layer in layers.items()}
        self.shadow = ShadowWeights(params)
        for name, weight in params.items():
            pin_zero = self.pinned[name] = bool((weight == 0).any())
            self.points[name] = quantile_points(weight, 2**self.bits, pin_zero).requires_grad_(True)
            self.assignment[name] = nearest(weight.detach(), self.points[name].detach())
        self.optimizer = torch.optim.Adam(list(self.points.values()), lr=self.lr)
        self.shadow.swap_in(self._quantize)

    def _quantize(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return self.points[name].detach()[self.assignment[name]].to(weight.dtype)

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        return loss

    @torch.no_grad()
    def before_optimizer_step(self, step: int) -> None:
        for name, param in self.shadow.params.items():
            if param.grad is None:
                continue
            grad = torch.zeros_like(self.points[name])
            grad.index_add_(0, self.assignment[name].reshape(-1), param.grad.reshape(-1).to(grad.dtype))
            if self.pinned[name]:
                grad[0] = 0.0  # the zero point of a pruned layer stays at 0
            self.points[name].grad = grad
            param.grad = None  # the full-precision weights stay fixed: the trainer's optimizer skips them
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.shadow.restore()

    def after_optimizer_step(self, step: int) -> None:
        self.shadow.swap_in(self._quantize)

    def finalize(self, model: nn.Module) -> nn.Module:
        self.shadow.release()
        return model

    def state_dict(self) -> dict[str, Any]:
        """The learned points, their Adam state, the assignments and the full-precision shadow weights."""
        return {
            "points": {name: p.detach() for name, p in self.points.items()},
            "assignment": self.assignment,
            "optimizer": self.optimizer.state_dict(),
            "shadow": self.shadow.state_dict(),
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, points in self.points.items():  # in place: the Adam optimizer holds these tensors
            points.copy_(state["points"][name])
            self.assignment[name] = state["assignment"][name].to(points.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.shadow.load_state_dict(state["shadow"])

    def spec(self) -> CompressionSpec:
        """2^bits learned (not evenly spaced) points per tensor; a layer's zeros keep a point pinned at 0."""
        promise = QuantizationPromise(tuple(self.points), self.bits, None, uniform=False)
        keeps = not self.skip_first_last  # the assignments are fixed: a zero stays on the pinned 0 point
        return CompressionSpec(
            method="DifferentiableQuantization", quantization=promise, keeps_zeros=keeps, shadows_weights=True
        )

    def check(self, total_steps: int, how: str = "") -> None:
        pass

    def metrics(self) -> dict[str, float]:
        spread = [float(p.detach().std()) for p in self.points.values()]
        return {"quant/bits": float(self.bits), "quant/points_std_mean": sum(spread) / max(len(spread), 1)}
