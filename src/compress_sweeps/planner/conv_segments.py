"""The cost family of sequential conv nets (the project's ConvNet): the graph (torch.fx) is cut before every
convolution, and each segment (a convolution and everything up to the next one) is timed alone at each pair of
input / output widths of a grid; see families.py."""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from compress_sweeps.planner.widths import Terms, grid, interpolate, log_uniform


class _Segment(nn.Module):
    """One segment of a sequential conv net, called like the model: `segment(pixel_values=...)`."""

    def __init__(self, body: nn.Module, key: str) -> None:
        super().__init__()
        self.body, self.key = body, key

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.body(inputs[self.key])


class ConvSegments:
    """A sequential conv net as segments that each start at a convolution; see the module docstring."""

    FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4)

    def __init__(self, dense: nn.Module, example: Mapping[str, torch.Tensor]) -> None:
        from torch.fx import symbolic_trace
        from torch.fx.passes.split_module import split_module

        if len(example) != 1:
            raise ValueError("a conv net with one input")
        self.dense, self.key = dense, next(iter(example))
        traced = symbolic_trace(dense)
        self.convs = [
            n.target
            for n in traced.graph.nodes
            if n.op == "call_module" and isinstance(traced.get_submodule(n.target), nn.Conv2d)
        ]
        if not self.convs:
            raise ValueError("no convolution")
        position = {"segment": 0}

        def segment_of(node) -> int:
            if node.op == "call_module" and node.target in self.convs:
                position["segment"] = self.convs.index(node.target)
            return position["segment"]

        self.split = split_module(traced, dense, segment_of)
        self.segments = [getattr(self.split, f"submod_{i}") for i in range(len(self.convs))]
        inputs = {}
        hooks = [
            s.register_forward_pre_hook(lambda m, a, i=i: inputs.setdefault(i, a)) for i, s in enumerate(self.segments)
        ]
        with torch.no_grad():
            self.split.eval()(example[self.key])
        for hook in hooks:
            hook.remove()
        if any(len(inputs[i]) != 1 for i in range(len(self.segments))):
            raise ValueError("a segment takes more than one input (a residual connection)")
        self.input_shapes = [list(inputs[i][0].shape) for i in range(len(self.segments))]
        self.channels = [dense.get_submodule(name).out_channels for name in self.convs]

    @staticmethod
    def matches(model: nn.Module) -> bool:
        return any(isinstance(m, nn.Conv2d) for m in model.modules())

    def signature(self) -> dict[str, Any]:
        return {
            "family": "conv",
            "class": type(self.dense).__name__,
            "channels": self.channels,
            "inputs": self.input_shapes,
            "parameters": sum(p.numel() for p in self.dense.parameters()),
        }

    def terms(self, model: nn.Module) -> Terms:
        """(layer, input channels, output channels) of every convolution of `model`, in forward order."""
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        return [(i, c.in_channels, c.out_channels) for i, c in enumerate(convs)]

    def widths(self, layer: int) -> tuple[list[int], list[int]]:
        """The grid of input and output channel counts of convolution `layer`."""
        inputs = [self.input_shapes[layer][1]] if layer == 0 else grid(self.channels[layer - 1], self.FRACTIONS)
        return inputs, grid(self.channels[layer], self.FRACTIONS)

    def segment(self, layer: int, cin: int, cout: int) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        """Segment `layer` with its convolution taking `cin` and giving `cout` channels (what follows resized to
        match), and an input for it."""
        body = copy.deepcopy(self.segments[layer]).eval()
        dense_out = self.channels[layer]
        linear_seen = False
        for name, module in list(body.named_modules()):
            if isinstance(module, nn.Conv2d):
                resized = nn.Conv2d(
                    cin, cout, module.kernel_size, module.stride, module.padding, module.dilation,
                    bias=module.bias is not None,
                )  # fmt: skip
            elif isinstance(module, nn.BatchNorm2d):
                resized = nn.BatchNorm2d(cout)
            elif isinstance(module, nn.Linear) and not linear_seen:
                linear_seen = True  # the first linear layer reads the flattened channels; later ones do not
                if module.in_features % dense_out:
                    raise ValueError(f"{name} reads {module.in_features} features of {dense_out} channels")
                resized = nn.Linear(module.in_features // dense_out * cout, module.out_features)
            else:
                continue
            parent, _, child = name.rpartition(".")
            setattr(body.get_submodule(parent) if parent else body, child, resized)
        shape = [self.input_shapes[layer][0], cin, *self.input_shapes[layer][2:]]
        return _Segment(body.eval(), self.key), {self.key: torch.randn(shape)}

    def probes(self) -> dict[str, tuple[nn.Module, dict[str, torch.Tensor] | None]]:
        """{entry name -> (module, its input)}: the dense model and every segment at every grid pair of widths."""
        probes: dict[str, tuple[nn.Module, dict | None]] = {"dense": (self.dense.eval(), None)}
        for layer in range(len(self.convs)):
            for cin, cout in itertools.product(*self.widths(layer)):
                probes[f"conv{layer}:{cin}x{cout}"] = self.segment(layer, cin, cout)
        return probes

    def features(self, costs: Mapping[str, float], terms: Terms) -> list[float]:
        """[the segments' interpolated sum, their border size, 1]: each segment timed alone reads its input from memory
        and (static int8) quantizes it on the way in and dequantizes its output on the way out, where inside the
        model the activations flow on; the calibration weighs that border cost as proportional to the segments'
        input sizes (channels x positions, relative to the dense model's)."""
        return [self._sum(costs, terms), self._border(terms) / self._border(self.dense_terms()), 1.0]

    def dense_terms(self) -> Terms:
        return [(i, self.channels[i - 1] if i else self.input_shapes[0][1], c) for i, c in enumerate(self.channels)]

    def _border(self, terms: Terms) -> float:
        return float(sum(cin * math.prod(self.input_shapes[layer][2:]) for layer, cin, _ in terms))

    def random_terms(self, rng: random.Random, round_to: int) -> Terms:
        """Random per-convolution widths, drawn log-uniformly (multiples of `round_to`), for the table's whole-model
        calibration."""
        widths = [log_uniform(rng, c, round_to) for c in self.channels]
        return [(i, widths[i - 1] if i else self.input_shapes[0][1], w) for i, w in enumerate(widths)]

    def deepest_terms(self, round_to: int) -> list[Terms]:
        """The deepest cut the slim pruner makes (every convolution at `round_to` channels): the calibration's anchor
        where the fit would otherwise extrapolate."""
        widths = [min(round_to, c) for c in self.channels]
        return [[(i, widths[i - 1] if i else self.input_shapes[0][1], w) for i, w in enumerate(widths)]]

    def build(self, terms: Terms) -> nn.Module:
        """The dense model with its convolutions at the widths of `terms` (BatchNorms and the first linear layer
        after the last convolution follow): random weights, for timing."""
        model = copy.deepcopy(self.dense).eval()
        widths = {self.convs[layer]: cout for layer, _, cout in terms}
        previous, last, linear_done = self.input_shapes[0][1], self.channels[-1], False
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.Conv2d):
                resized = nn.Conv2d(
                    previous, widths[name], module.kernel_size, module.stride, module.padding, module.dilation,
                    bias=module.bias is not None,
                )  # fmt: skip
                previous = widths[name]
            elif isinstance(module, nn.BatchNorm2d):
                resized = nn.BatchNorm2d(previous)
            elif isinstance(module, nn.Linear) and not linear_done:
                linear_done = True
                resized = nn.Linear(module.in_features // last * previous, module.out_features)
            else:
                continue
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, resized)
        return model.eval()

    def _sum(self, costs: Mapping[str, float], terms: Terms) -> float:
        total = 0.0
        for layer, cin, cout in terms:
            inputs, outputs = self.widths(layer)
            rows = {i: {o: costs[f"conv{layer}:{i}x{o}"] for o in outputs} for i in inputs}
            total += interpolate({i: interpolate(row, cout) for i, row in rows.items()}, cin)
        return total
