"""Heads, FFN neurons and whole blocks of transformer blocks as units: BERT-family encoders (BERT, RoBERTa, ELECTRA,
MiniLM) and Llama-style decoders (Llama, SmolLM2, Mistral, Qwen2: grouped-query attention, gated FFN).

A block is recognised by its layout (`LAYOUTS`): a BERT block has `attention.self.{query,key,value}` (+
`num_attention_heads`), `attention.output.dense`, `intermediate.dense` and `output.dense`; a decoder block has
`self_attn.{q,k,v,o}_proj` and `mlp.{gate,up,down}_proj`. The blocks are the entries of the `ModuleList` holding
them (`bert.encoder.layer`, `model.layers`). Physical removal keeps every module's class: the Linear layers get fewer
rows or columns. A BERT self-attention module gets its own `num_attention_heads` / `all_head_size` (its reshapes use
`view(..., -1, head_dim)`, so per-layer head counts need nothing more). In a decoder with grouped-query attention a
head unit is one key/value head *with its query group* (`num_attention_heads / num_key_value_heads` query heads): the
group ratio every layer keeps is the one the attention code repeats keys and values by, and its reshapes use `-1`
heads too. Removed blocks leave the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from compress_sweeps.errors import ConfigError
from compress_sweeps.models.structure import heads_of, set_heads
from compress_sweeps.pruners.slim.units import BlockUnits, Slice, UnitGroup, block_of
from compress_sweeps.weights.selection import LayerSelection


@dataclass(frozen=True)
class Layout:
    """Where a block's parts are: the attention module owning the heads, its query / key / value / output
    projections, the FFN's input projections (rows are neurons) and its output projection (columns)."""

    name: str
    attention: str
    query: str
    key: str
    value: str
    output: str
    ffn_in: tuple[str, ...]
    ffn_out: str

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.query, self.key, self.value, self.output, *self.ffn_in, self.ffn_out)

    def head_shape(self, block: nn.Module) -> tuple[int, int, int] | None:
        """(head units, query rows per unit, key/value rows per unit) of a block of this layout, or None."""
        attention = block.get_submodule(self.attention)
        query, key = block.get_submodule(self.query), block.get_submodule(self.key)
        heads = heads_of(attention)
        if heads is not None:  # BERT: one unit per head, query and key/value heads alike
            return heads, query.out_features // heads, query.out_features // heads
        head_dim = getattr(attention, "head_dim", None)
        if not isinstance(head_dim, int) or key.out_features % head_dim or query.out_features % key.out_features:
            return None
        groups = key.out_features // head_dim  # key/value heads; each keeps its query heads
        return groups, query.out_features // groups, head_dim


ENCODER = Layout(
    "encoder",
    "attention.self",
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    ("intermediate.dense",),
    "output.dense",
)
DECODER = Layout(
    "decoder",
    "self_attn",
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.down_proj",
)
LAYOUTS = (ENCODER, DECODER)


def layout_of(module: nn.Module, layouts: Sequence[Layout] = LAYOUTS) -> Layout | None:
    """The layout a module is a block of, or None."""
    for layout in layouts:
        try:
            linears = [module.get_submodule(p) for p in layout.parts]
            module.get_submodule(layout.attention)
        except AttributeError:
            continue
        if all(isinstance(m, nn.Linear) for m in linears) and layout.head_shape(module) is not None:
            return layout
    return None


def is_block(module: nn.Module, layouts: Sequence[Layout] = LAYOUTS) -> bool:
    return layout_of(module, layouts) is not None


def find_blocks(model: nn.Module, layouts: Sequence[Layout] = LAYOUTS) -> tuple[str, nn.ModuleList] | None:
    """The name and `ModuleList` of the transformer blocks (of one of `layouts`), or None when the model has none."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(is_block(b, layouts) for b in module):
            return name, module
    return None


def no_blocks_error(model: nn.Module, units: Sequence[str]) -> ConfigError:
    return ConfigError(
        "pruner.units",
        list(units),
        "heads, ffn and blocks need transformer blocks: a BERT-family encoder (attention.self.query/key/value, "
        "attention.output.dense, intermediate.dense, output.dense) or a Llama-style decoder (self_attn.q/k/v/o_proj, "
        "mlp.gate/up/down_proj) in a ModuleList; use units=[channels] for a CNN",
        problem=f"finds no such block in this {type(model).__name__}",
    )


def _rows(name: str, module: nn.Linear, index: torch.Tensor) -> list[Slice]:
    """Output rows `index` of a Linear layer: its weight and bias."""
    slices = [Slice(name, module, "weight", 0, index)]
    return slices + ([Slice(name, module, "bias", 0, index)] if module.bias is not None else [])


def head_group(name: str, block: nn.Module, position: int | None) -> UnitGroup:
    """The heads of one block: rows of q/k/v (weights and biases) and columns of the output projection; a decoder's
    unit is a key/value head with its query group."""
    layout = layout_of(block)
    units, query_rows, kv_rows = layout.head_shape(block)
    queries = torch.arange(units * query_rows).reshape(units, query_rows)
    pairs = torch.arange(units * kv_rows).reshape(units, kv_rows)
    slices = _rows(f"{name}.{layout.query}", block.get_submodule(layout.query), queries)
    for part in (layout.key, layout.value):
        slices += _rows(f"{name}.{part}", block.get_submodule(part), pairs)
    slices.append(Slice(f"{name}.{layout.output}", block.get_submodule(layout.output), "weight", 1, queries))
    attention = block.get_submodule(layout.attention)
    scope = [f"{name}.{layout.attention}", f"{name}.{layout.output}"]
    owner = attention if heads_of(attention) is not None else None  # a head count to update at removal
    return UnitGroup("heads", f"{name}.{layout.attention}", slices, scope, block=position, min_kept=1, owner=owner)


def ffn_group(name: str, block: nn.Module, position: int | None, round_to: int) -> UnitGroup:
    """The neurons of one FFN: a row (+ bias) of each input projection (a decoder's gate and up projections) and the
    matching column of the output projection."""
    layout = layout_of(block)
    inner = block.get_submodule(layout.ffn_in[0])
    index = torch.arange(inner.out_features).unsqueeze(1)
    slices = [s for part in layout.ffn_in for s in _rows(f"{name}.{part}", block.get_submodule(part), index)]
    slices.append(Slice(f"{name}.{layout.ffn_out}", block.get_submodule(layout.ffn_out), "weight", 1, index))
    scope = [*(f"{name}.{part}" for part in layout.ffn_in), f"{name}.{layout.ffn_out}"]
    return UnitGroup("ffn", f"{name}.{layout.ffn_in[0]}", slices, scope, block=position,
                     min_kept=min(round_to, len(index)))  # fmt: skip


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
        if group.kind == "heads" and group.owner is not None:
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
    """What a Hugging Face config can say about the slim model: its depth, the FFN width when every layer shares one,
    and a decoder's head counts when every layer keeps as many (then `from_pretrained` loads the folder). Per-layer
    head counts and widths it cannot say: the run folder's slim_structure.json carries them."""
    if not isinstance(model, PreTrainedModel):
        return
    if blocks is not None:
        model.config.num_hidden_layers = len(blocks.container)

    def kept(kind: str) -> set[int]:
        return {g.kept for g in groups if g.kind == kind and (g.block is None or not bool(blocks.removed[g.block]))}

    if len(widths := kept("ffn")) == 1:
        model.config.intermediate_size = widths.pop()
    decoder = [g for g in groups if g.kind == "heads" and g.owner is None]  # key/value heads with their queries
    if decoder and len(counts := kept("heads")) == 1 and hasattr(model.config, "num_key_value_heads"):
        ratio = model.config.num_attention_heads // model.config.num_key_value_heads
        model.config.num_key_value_heads = counts.pop()
        model.config.num_attention_heads = model.config.num_key_value_heads * ratio
