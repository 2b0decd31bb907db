"""How a model's latency splits into blocks whose cost the cost table measures at each width.

Two families, each asked `matches(model)` (`ConvSegments` lives in conv_segments.py):

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
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.planner.conv_segments import ConvSegments
from compress_sweeps.planner.widths import Terms, grid, interpolate, log_uniform
from compress_sweeps.pruners.slim import transformer


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
