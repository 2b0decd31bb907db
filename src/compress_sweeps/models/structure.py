"""A model's shapes as data: what `model_config.yaml` cannot say about a model whose units were cut out.

A Hugging Face config holds one head count and one FFN width for all layers, and a CNN config one width per stage,
so a model with per-layer shapes (structured slimming) is not rebuilt by its config alone. `describe` reads the
shapes from the modules themselves: the length of every `ModuleList`, the shape of every Linear / Conv /
BatchNorm layer and the head count of every self-attention module. `save_model` writes the record beside the
weights (`slim_structure.json`) when it differs from the model the config rebuilds; `apply` gives a freshly
built model those shapes before its weights are loaded (`from_run`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

STRUCTURE = "slim_structure.json"
FORMAT = "compress_sweeps.structure/1"
CONVS = (nn.Conv1d, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def heads_of(module: nn.Module) -> int | None:
    """The head count of a BERT-family self-attention module (`num_attention_heads` beside `attention_head_size`,
    as transformers names them), None for any other module."""
    heads, size = (getattr(module, name, None) for name in ("num_attention_heads", "attention_head_size"))
    return heads if isinstance(heads, int) and isinstance(size, int) else None


def set_heads(module: nn.Module, count: int) -> None:
    """Give a self-attention module `count` heads (its q/k/v layers are resized separately)."""
    module.num_attention_heads = int(count)
    module.all_head_size = int(count) * module.attention_head_size


def describe(model: nn.Module) -> dict[str, Any]:
    """The shape record of `model`, read from its modules."""
    lists: dict[str, int] = {}
    modules: dict[str, dict[str, Any]] = {}
    heads: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            lists[name] = len(module)
        elif isinstance(module, (nn.Linear, *CONVS)):
            modules[name] = {"type": type(module).__name__, "weight": list(module.weight.shape)}
        elif isinstance(module, NORMS):
            modules[name] = {"type": type(module).__name__, "num_features": module.num_features}
        if (count := heads_of(module)) is not None:
            heads[name] = count
    return {"format": FORMAT, "lists": lists, "modules": modules, "heads": heads}


def differs(model: nn.Module, reference: nn.Module) -> bool:
    """Whether `model`'s shapes differ from `reference`'s (the model its config rebuilds)."""
    return describe(model) != describe(reference)


def _empty(like: torch.Tensor | None, shape: Sequence[int]) -> nn.Parameter | None:
    if like is None:
        return None
    return nn.Parameter(torch.empty(tuple(shape), dtype=like.dtype, device=like.device), like.requires_grad)


@torch.no_grad()
def _resize(module: nn.Module, spec: Mapping[str, Any]) -> None:
    """Give `module` the recorded shape (values come from the state dict loaded next)."""
    if isinstance(module, NORMS):
        n = int(spec["num_features"])
        module.num_features = n
        module.weight, module.bias = _empty(module.weight, [n]), _empty(module.bias, [n])
        if module.running_mean is not None:
            module.running_mean = torch.zeros(n, dtype=module.running_mean.dtype, device=module.running_mean.device)
            module.running_var = torch.ones(n, dtype=module.running_var.dtype, device=module.running_var.device)
        return
    shape = [int(x) for x in spec["weight"]]
    module.weight = _empty(module.weight, shape)
    if module.bias is not None:
        module.bias = _empty(module.bias, shape[:1])
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = shape
    else:
        module.out_channels, module.in_channels = shape[0], shape[1] * module.groups


def apply(model: nn.Module, structure: Mapping[str, Any]) -> nn.Module:
    """Shrink a freshly built `model` (in place) to the recorded shapes; load the saved weights afterwards.

    A shorter `ModuleList` keeps its first entries: every entry's shapes are set from the record next and every
    value comes from the weights, so which entries the slimming removed does not matter.
    """
    if structure.get("format") != FORMAT:
        raise ValueError(f"{STRUCTURE}: format {structure.get('format')!r} is not {FORMAT!r}")
    for name, length in structure["lists"].items():
        container = model.get_submodule(name)
        if len(container) < length:
            raise ValueError(f"{STRUCTURE}: '{name}' holds {len(container)} entries, the record says {length}")
        while len(container) > length:
            del container[len(container) - 1]
    blocks = [n for name, n in structure["lists"].items() if name.endswith(("encoder.layer", "model.layers"))]
    if isinstance(model, PreTrainedModel) and blocks:  # its config counts the encoder blocks too
        model.config.num_hidden_layers = blocks[0]
    built = describe(model)["modules"]
    for name, spec in structure["modules"].items():
        module = model.get_submodule(name)
        if type(module).__name__ != spec["type"]:
            raise ValueError(f"{STRUCTURE}: '{name}' is a {type(module).__name__}, the record says {spec['type']}")
        if built.get(name) != spec:  # a layer of the built shape keeps its parameters (and any tie: an LM's head)
            _resize(module, spec)
    for name, count in structure["heads"].items():
        set_heads(model.get_submodule(name), count)
    return model


def save(model: nn.Module, folder: str | Path) -> Path:
    """Write `model`'s shape record into `folder`."""
    path = Path(folder) / STRUCTURE
    path.write_text(json.dumps(describe(model), indent=1) + "\n")
    return path


def load(model: nn.Module, folder: str | Path) -> nn.Module:
    """Apply `folder`'s shape record to `model` when there is one (a model of the config's shapes is unchanged)."""
    path = Path(folder) / STRUCTURE
    if path.is_file():
        apply(model, json.loads(path.read_text()))
    return model
