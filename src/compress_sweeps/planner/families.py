"""How a model's latency splits into blocks whose cost the cost table measures at each width.

Two families, each asked `matches(model)`:

- `TransformerBlocks`: BERT-family encoders and Llama-style decoders (the blocks `pruners/slim/transformer.py`
  slims; a decoder's head unit is a key/value head with its query group). A block with `h` head units and an FFN of
  width `w` costs `A(h) + F(w) - A(H)` (attention and FFN run one after the other; measured separable to about 2%
  of a block here), where `A(h)` is the per-block cost in a model of `CONTEXT` blocks that all have `h` heads and a
  full FFN, and `F(w)` the same for FFN width `w`. Blocks are timed among other blocks, not alone: a lone block
  served back to back keeps its weights in cache and timed 6-19% faster per block than inside the encoder. The
  rest of the model (embeddings, pooler, classifier or LM head) is the zero-block model.
- `ConvSegments`: sequential conv nets (the project's ConvNet): the graph (torch.fx) is cut before every
  convolution, and each segment (a convolution and everything up to the next one) is timed alone at each pair of
  input / output widths of a grid; the sum over segments is scaled so that the dense model's is its measured time.

Widths between grid points are interpolated linearly (bilinearly for a convolution's two widths). Every probe is a
real module built from the dense model with the slimming code's own cuts (heads, FFN neurons) or resized layers,
and every cost is a ratio against the dense model in the same runtime, timed interleaved with it.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.pruners.slim import transformer

Terms = list[tuple[int, ...]]  # per block (h, w) or per segment (layer, cin, cout)


def interpolate(points: Mapping[int, float], x: float) -> float:
    """Linear interpolation of `points` {width: cost} at `x` (linear extrapolation from the two nearest points)."""
    keys = sorted(points)
    if len(keys) == 1:
        return points[keys[0]]
    low = max([k for k in keys if k <= x] or [keys[0]])
    high = min([k for k in keys if k >= x] or [keys[-1]])
    if low == high:
        return points[low]
    if x < keys[0] or x > keys[-1]:
        low, high = (keys[0], keys[1]) if x < keys[0] else (keys[-2], keys[-1])
    f = (x - low) / (high - low)
    return points[low] * (1 - f) + points[high] * f


def log_uniform(rng: random.Random, full: int, round_to: int) -> int:
    """A width between `round_to` (or 1) and `full`, log-uniform, a multiple of `round_to` (or `full` itself)."""
    low = min(round_to, full)
    width = round(math.exp(rng.uniform(math.log(low), math.log(full))) / round_to) * round_to
    return min(full, max(low, width))


def grid(full: int, fractions: Sequence[float]) -> list[int]:
    """Kept counts at `fractions` of `full` (at least 1), distinct and sorted, `full` included."""
    return sorted({max(1, round(full * f)) for f in fractions} | {full})


class TransformerBlocks:
    """Transformer blocks as (head units, FFN width): a BERT-family encoder or a Llama-style decoder (the layouts
    `pruners/slim/transformer.py` slims; a decoder's head unit is a key/value head with its query group); see the
    module docstring."""

    HEAD_FRACTIONS = (1 / 12, 3 / 12, 6 / 12, 9 / 12)
    FFN_FRACTIONS = (1 / 64, 1 / 8, 1 / 4, 1 / 2, 3 / 4)
    CONTEXT = 2  # blocks per probe: cheaper than the full depth, and the calibration weighs what context changes

    def __init__(self, dense: nn.Module, example: Mapping[str, torch.Tensor]) -> None:
        self.dense = dense
        found = transformer.find_blocks(dense)
        if found is None:
            raise ValueError("no transformer blocks")
        _, blocks = found
        self.layout = transformer.layout_of(blocks[0])
        self.depth = len(blocks)
        self.heads, self.width = self.block_shape(blocks[0])
        if any(self.block_shape(b) != (self.heads, self.width) for b in blocks):
            raise ValueError("the dense model's blocks differ in shape")

    @staticmethod
    def matches(model: nn.Module) -> bool:
        return transformer.find_blocks(model) is not None

    def signature(self) -> dict[str, Any]:
        first = transformer.find_blocks(self.dense)[1][0]
        return {
            "family": self.layout.name,
            "class": type(self.dense).__name__,
            "blocks": self.depth,
            "heads": self.heads,
            "ffn": self.width,
            "hidden": first.get_submodule(self.layout.output).out_features,
            "parameters": sum(p.numel() for p in self.dense.parameters()),
        }

    def block_shape(self, block: nn.Module) -> tuple[int, int]:
        heads = self.layout.head_shape(block)[0]
        return heads, block.get_submodule(self.layout.ffn_in[0]).out_features

    def terms(self, model: nn.Module) -> Terms:
        """(head units, FFN width) of every block `model` keeps."""
        found = transformer.find_blocks(model, (self.layout,))
        return [] if found is None else [self.block_shape(block) for block in found[1]]

    def shaped(self, shapes: Sequence[tuple[int, int]]) -> nn.Module:
        """A copy of the dense model with one block per entry of `shapes`, each cut to its (heads, width)."""
        model = copy.deepcopy(self.dense).eval()
        prefix, blocks = transformer.find_blocks(model, (self.layout,))
        while len(blocks) > len(shapes):
            del blocks[len(blocks) - 1]
        groups = []
        for i, (heads, width) in enumerate(shapes):
            name = f"{prefix}.{i}"
            attention, ffn = (
                transformer.head_group(name, blocks[i], None),
                transformer.ffn_group(name, blocks[i], None, 1),
            )
            attention.pruned[heads:] = True
            ffn.pruned[width:] = True
            groups += [attention, ffn]
        transformer.remove_units(groups, None)
        if hasattr(model, "config"):
            model.config.num_hidden_layers = len(shapes)  # a decoder runs `layers[: num_hidden_layers]`
        return model

    def probes(self) -> dict[str, tuple[nn.Module, None]]:
        """{entry name -> (model, None)}: the dense and zero-block models and one uniform model of `CONTEXT` blocks
        per grid width. (None: every probe takes the plan's inputs.)"""
        full, depth = (self.heads, self.width), min(self.CONTEXT, self.depth)
        probes = {"dense": self.shaped([full] * self.depth), "zero": self.shaped([])}
        for h in grid(self.heads, self.HEAD_FRACTIONS):
            probes[f"heads={h}"] = self.shaped([(h, self.width)] * depth)
        for w in grid(self.width, self.FFN_FRACTIONS)[:-1]:
            probes[f"ffn={w}"] = self.shaped([(self.heads, w)] * depth)
        return {name: (model, None) for name, model in probes.items()}

    def build(self, terms: Terms) -> nn.Module:
        return self.shaped(terms)

    def dense_terms(self) -> Terms:
        return [(self.heads, self.width)] * self.depth

    def random_terms(self, rng: random.Random, round_to: int) -> Terms:
        """A random slim shape (for the table's whole-model calibration): some blocks, random heads, and FFN widths
        drawn log-uniformly (multiples of `round_to`), so deep cuts are calibrated as well as light ones."""
        depth = rng.randint(max(1, self.depth // 3), self.depth)
        return [(rng.randint(1, self.heads), log_uniform(rng, self.width, round_to)) for _ in range(depth)]

    def deepest_terms(self, round_to: int) -> list[Terms]:
        """The deepest cuts the slim pruner makes (one head and `round_to` FFN neurons per block, at full depth and
        at a third of it): the calibration's anchors where the fit would otherwise extrapolate."""
        tiny = (1, min(round_to, self.width))
        return [[tiny] * self.depth, [tiny] * max(1, self.depth // 3)]

    def features(self, costs: Mapping[str, float], terms: Terms) -> list[float]:
        """[the blocks' summed cost, 1]: what the calibration weighs (a scale and an offset)."""
        return [self.summed(costs, terms), 1.0]

    def summed(self, costs: Mapping[str, float], terms: Terms) -> float:
        """The cost of a model of `terms` in units of the dense model's time (from `costs`, the probes' times over
        the dense model's)."""
        zero, depth = costs["zero"], min(self.CONTEXT, self.depth)
        attention = {h: (costs[f"heads={h}"] - zero) / depth for h in grid(self.heads, self.HEAD_FRACTIONS)}
        per_block = attention[self.heads]
        ffn = {w: (costs[f"ffn={w}"] - zero) / depth for w in grid(self.width, self.FFN_FRACTIONS)[:-1]}
        ffn[self.width] = per_block
        return zero + sum(interpolate(attention, h) + interpolate(ffn, w) - per_block for h, w in terms)


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


FAMILIES = (TransformerBlocks, ConvSegments)


def family_of(dense: nn.Module, example: Mapping[str, torch.Tensor]) -> TransformerBlocks | ConvSegments:
    """The first family that describes `dense`; a ConfigError naming the planner when none does."""
    reasons = []
    for family in FAMILIES:
        if family.matches(dense):
            try:
                return family(dense, example)
            except (ValueError, RuntimeError, TypeError) as error:
                reasons.append(f"{family.__name__}: {error}")
    raise ConfigError(
        "model",
        type(dense).__name__,
        "must be a BERT-family encoder, a Llama-style decoder or a sequential conv net for the planner's cost table"
        + (f" ({'; '.join(reasons)})" if reasons else ""),
        problem="has no latency model",
    )
