"""Heads, FFN neurons and whole blocks of BERT-family encoders (BERT, RoBERTa, ELECTRA, MiniLM) as units.

A block is a module with `attention.self.{query,key,value}` (+ `num_attention_heads`), `attention.output.dense`,
`intermediate.dense` and `output.dense`; the blocks are the entries of the `ModuleList` holding them
(`bert.encoder.layer`). Physical removal keeps every module's class: the Linear layers get fewer rows or columns,
and the self-attention module gets its own `num_attention_heads` / `all_head_size` (transformers' BERT attention
reshapes with `view(..., -1, head_dim)`, so per-layer head counts need nothing more); removed blocks leave the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from compress_sweeps.errors import ConfigError
from compress_sweeps.models.structure import heads_of, set_heads
from compress_sweeps.pruners.slim.units import BlockUnits, Slice, UnitGroup, block_of
from compress_sweeps.weights.selection import LayerSelection

PARTS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")
FFN = ("intermediate.dense", "output.dense")


def is_block(module: nn.Module) -> bool:
    try:
        linears = [module.get_submodule(p) for p in (*PARTS, *FFN)]
    except AttributeError:
        return False
    return heads_of(module.get_submodule("attention.self")) is not None and all(
        isinstance(m, nn.Linear) for m in linears
    )


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The name and `ModuleList` of the encoder blocks, or None when the model has none."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(is_block(b) for b in module):
            return name, module
    return None


def no_blocks_error(model: nn.Module, units: Sequence[str]) -> ConfigError:
    return ConfigError(
        "pruner.units",
        list(units),
        "heads, ffn and blocks need a BERT-family encoder (a ModuleList of blocks with attention.self.query/key/"
        "value, attention.output.dense, intermediate.dense and output.dense); use units=[channels] for a CNN",
        problem=f"finds no such encoder block in this {type(model).__name__}",
    )


def head_group(name: str, block: nn.Module, position: int | None) -> UnitGroup:
    """The heads of one block: `head_dim` rows of q/k/v (weights and biases) and columns of the output projection."""
    attention = block.get_submodule("attention.self")
    heads = heads_of(attention)
    head_dim = block.get_submodule(PARTS[0]).out_features // heads
    index = torch.arange(heads * head_dim).reshape(heads, head_dim)
    slices = []
    for part in PARTS[:3]:
        module = block.get_submodule(part)
        slices.append(Slice(f"{name}.{part}", module, "weight", 0, index))
        if module.bias is not None:
            slices.append(Slice(f"{name}.{part}", module, "bias", 0, index))
    out = block.get_submodule(PARTS[3])
    slices.append(Slice(f"{name}.{PARTS[3]}", out, "weight", 1, index))
    scope = [f"{name}.attention.self", f"{name}.{PARTS[3]}"]
    return UnitGroup("heads", f"{name}.attention.self", slices, scope, block=position, min_kept=1, owner=attention)


def ffn_group(name: str, block: nn.Module, position: int | None, round_to: int) -> UnitGroup:
    """The neurons of one FFN: a row (+ bias) of `intermediate.dense` and the matching column of `output.dense`."""
    inner, outer = (block.get_submodule(p) for p in FFN)
    index = torch.arange(inner.out_features).unsqueeze(1)
    slices = [Slice(f"{name}.{FFN[0]}", inner, "weight", 0, index)]
    if inner.bias is not None:
        slices.append(Slice(f"{name}.{FFN[0]}", inner, "bias", 0, index))
    slices.append(Slice(f"{name}.{FFN[1]}", outer, "weight", 1, index))
    scope = [f"{name}.{FFN[0]}", f"{name}.{FFN[1]}"]
    return UnitGroup("ffn", f"{name}.{FFN[0]}", slices, scope, block=position, min_kept=min(round_to, len(index)))


def transformer_units(
    model: nn.Module,
    units: Sequence[str],
    selection: LayerSelection,
    round_to: int,
) -> tuple[list[UnitGroup], BlockUnits | None]:
    """Unit groups for the heads and/or FFN neurons of the blocks `selection` names (include/exclude on block names
    such as `bert.encoder.layer.3`), and the blocks themselves if asked."""
    found = find_blocks(model)
    if found is None:
        raise no_blocks_error(model, units)
    prefix, container = found
    selected = [i for i in range(len(container)) if selection.selects_name(f"{prefix}.{i}")]
    if not selected:
        include, exclude = list(selection.include), list(selection.exclude)
        raise ConfigError(
            "pruner.include" if include else "pruner.exclude",
            include or exclude,
            f"must select at least one block of {prefix}.0 .. {prefix}.{len(container) - 1}",
            problem="matches no encoder block",
        )
    blocks = BlockUnits(prefix, container, selected) if "blocks" in units else None
    groups = []
    for i in selected:
        name = f"{prefix}.{i}"
        position = block_of(name, blocks)
        if "heads" in units:
            groups.append(head_group(name, container[i], position))
        if "ffn" in units:
            groups.append(ffn_group(name, container[i], position, round_to))
    return groups, blocks


@torch.no_grad()
def shrink_linear(linear: nn.Linear, dim: int, keep: torch.Tensor) -> None:
    """Keep only positions `keep` of `linear`'s output (dim 0) or input (dim 1) features, in place."""
    keep = keep.to(linear.weight.device)
    linear.weight = nn.Parameter(linear.weight.index_select(dim, keep).clone())
    if dim == 0:
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.index_select(0, keep).clone())
        linear.out_features = len(keep)
    else:
        linear.in_features = len(keep)


@torch.no_grad()
def remove_units(groups: Sequence[UnitGroup], blocks: BlockUnits | None) -> None:
    """Physically remove the pruned heads and neurons, then drop the removed blocks from their list."""
    for group in groups:
        if group.block is not None and bool(blocks.removed[group.block]):
            continue  # the whole block goes
        done: set[tuple[int, int]] = set()
        for s in group.slices:
            if (id(s.module), s.dim) in done:  # weight and bias of one layer: one shrink
                continue
            shrink_linear(s.module, s.dim, group.kept_index(s))
            done.add((id(s.module), s.dim))
        if group.kind == "heads":
            set_heads(group.owner, group.kept)
    if blocks is not None and bool(blocks.removed.any()):
        dropped = {i for i, gone in zip(blocks.indices, blocks.removed.tolist(), strict=True) if gone}
        kept = [b for i, b in enumerate(blocks.container) if i not in dropped]
        for _ in range(len(blocks.container)):
            del blocks.container[0]
        blocks.container.extend(kept)


def skip_hooks(blocks: BlockUnits) -> list:
    """Forward hooks that make a removed block return its input (the block is dropped at finalize)."""

    def hook(position: int):
        def skip(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if not bool(blocks.removed[position]):
                return output
            hidden = args[0] if args else kwargs["hidden_states"]
            return hidden if isinstance(output, torch.Tensor) else (hidden, *output[1:])

        return skip

    return [blocks.container[i].register_forward_hook(hook(p), with_kwargs=True) for p, i in enumerate(blocks.indices)]


def update_hf_config(model: nn.Module, groups: Sequence[UnitGroup], blocks: BlockUnits | None) -> None:
    """What a Hugging Face config can say about the slim model: its depth, and the FFN width when every layer
    shares one (then `from_pretrained` loads a model whose heads were kept). Per-layer head counts and widths it
    cannot say: the run folder's slim_structure.json carries them."""
    if not isinstance(model, PreTrainedModel):
        return
    if blocks is not None:
        model.config.num_hidden_layers = len(blocks.container)
    widths = {g.kept for g in groups if g.kind == "ffn" and (g.block is None or not bool(blocks.removed[g.block]))}
    if len(widths) == 1:
        model.config.intermediate_size = widths.pop()
