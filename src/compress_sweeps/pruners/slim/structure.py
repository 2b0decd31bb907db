"""The shapes of a slim model, written beside its weights so that the project's loader rebuilds it.

A Hugging Face config holds one head count and one FFN width for all layers, so a model with per-layer shapes
cannot be described by `config.json` alone. `describe` records what differs from the architecture the model's own
config builds: blocks dropped from a `ModuleList`, the shape of every Linear / Conv / BatchNorm layer, and the head
count of every self-attention module. `apply_structure` does the reverse on a freshly built model (before its
weights are loaded): `models.runs.from_run` applies `slim_structure.json` when a run folder has one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

STRUCTURE = "slim_structure.json"
FORMAT = "compress_sweeps.slim/1"
CONVS = (nn.Conv1d, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def describe(model: nn.Module, dropped: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """The structure record of a slimmed `model`; `dropped`: {ModuleList name -> original indices removed}."""
    modules: dict[str, dict[str, Any]] = {}
    heads: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, *CONVS)):
            modules[name] = {"type": type(module).__name__, "weight": list(module.weight.shape)}
        elif isinstance(module, NORMS):
            modules[name] = {"type": type(module).__name__, "num_features": module.num_features}
        if isinstance(getattr(module, "num_attention_heads", None), int) and hasattr(module, "attention_head_size"):
            heads[name] = module.num_attention_heads
    return {"format": FORMAT, "dropped": {k: sorted(v) for k, v in dropped.items()}, "modules": modules, "heads": heads}


def _empty(like: torch.Tensor | None, shape: Sequence[int]) -> nn.Parameter | None:
    if like is None:
        return None
    return nn.Parameter(torch.empty(tuple(shape), dtype=like.dtype, device=like.device), like.requires_grad)


@torch.no_grad()
def _resize(module: nn.Module, spec: Mapping[str, Any]) -> None:
    """Give `module` the recorded shape (values are filled by the state dict loaded next)."""
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


def apply_structure(model: nn.Module, structure: Mapping[str, Any]) -> nn.Module:
    """Shrink a freshly built `model` (in place) to the recorded shapes; load the slim weights afterwards."""
    if structure.get("format") != FORMAT:
        raise ValueError(f"{STRUCTURE}: format {structure.get('format')!r} is not {FORMAT!r}")
    for prefix, dropped in structure["dropped"].items():
        container = model.get_submodule(prefix)
        kept = [block for i, block in enumerate(container) if i not in set(dropped)]
        while len(container):
            del container[0]
        container.extend(kept)
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = len(container)
    for name, spec in structure["modules"].items():
        module = model.get_submodule(name)
        if type(module).__name__ != spec["type"]:
            raise ValueError(f"{STRUCTURE}: '{name}' is a {type(module).__name__}, the record says {spec['type']}")
        _resize(module, spec)
    for name, count in structure["heads"].items():
        attention = model.get_submodule(name)
        attention.num_attention_heads = int(count)
        attention.all_head_size = int(count) * attention.attention_head_size
    model.slim_structure = dict(structure)
    return model


def save_structure(model: nn.Module, folder: str | Path) -> Path | None:
    """Write the slim model's structure record into `folder` (nothing for a model that was not slimmed)."""
    structure = getattr(model, "slim_structure", None)
    if structure is None:
        return None
    path = Path(folder) / STRUCTURE
    path.write_text(json.dumps(structure, indent=1) + "\n")
    return path


def load_structure(model: nn.Module, folder: str | Path) -> nn.Module:
    """Apply `folder`'s structure record to `model` when there is one (a plain model is returned unchanged)."""
    path = Path(folder) / STRUCTURE
    if path.is_file():
        apply_structure(model, json.loads(path.read_text()))
    return model
