"""What a model (or one of its modules) costs: parameters counted from the tensors, FLOPs from a real forward pass.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode` on one forward pass of an example batch, per module
(a module's count includes its children's). It counts matrix products and convolutions (2 FLOPs per multiply-add),
the work structured pruning removes; norms, softmax and activations are not counted. Hugging Face models run in
eager attention while counted: the fused CPU attention kernel has no FLOP formula, its explicit matmuls have.
The values of the inputs do not change the count, only their shapes: `example_inputs` rebuilds an example from
the shapes `example_shapes` recorded, so a run folder's FLOPs can be re-counted without its data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import PreTrainedModel

DTYPES = {
    str(t).removeprefix("torch."): t for t in (torch.int64, torch.int32, torch.float32, torch.float16, torch.bfloat16)
}


def module_params(model: nn.Module, names: Iterable[str]) -> int:
    """Parameters of the named modules (children included), each parameter counted once."""
    seen: set[int] = set()
    total = 0
    for name in names:
        for param in model.get_submodule(name).parameters():
            if id(param) not in seen:
                seen.add(id(param))
                total += param.numel()
    return total


def total_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def module_flops(model: nn.Module, example: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """{module name -> FLOPs of one forward pass on `example`} ('' is the whole model)."""
    attention = model.config._attn_implementation if isinstance(model, PreTrainedModel) else None
    eager = attention not in (None, "eager")
    was_training = model.training
    model.eval()
    try:
        if eager:
            model.set_attn_implementation("eager")
        with FlopCounterMode(display=False) as counter:
            model(**example)
    finally:
        if eager:
            model.set_attn_implementation(attention)
        model.train(was_training)
    root = type(model).__name__
    flops = {"": 0.0}
    for name, counts in counter.get_flop_counts().items():
        if name == "Global":
            continue
        key = "" if name == root else name.removeprefix(root + ".")
        flops[key] = float(sum(counts.values()))
    return flops


def outermost(names: Iterable[str]) -> list[str]:
    """The names not inside another of them (a module inside another counts once)."""
    names = sorted(set(names))
    return [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]


def scope_cost(model: nn.Module, names: Iterable[str], flops: Mapping[str, float] | None) -> float:
    """Parameters (flops None) or FLOPs of the union of the named modules."""
    outer = outermost(names)
    if flops is None:
        return float(module_params(model, outer))
    return float(sum(flops.get(n, 0.0) for n in outer))


def example_shapes(example: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """{input -> {shape, dtype}}: what FLOPs were counted on, for results.json."""
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in example.items()}


def example_inputs(shapes: Mapping[str, Mapping[str, Any]], device: torch.device | str = "cpu") -> dict:
    """An example batch of the recorded shapes: zeros (token id 0, a valid id), ones for attention masks."""
    inputs = {}
    for key, spec in shapes.items():
        fill = 1 if key == "attention_mask" else 0
        inputs[key] = torch.full(tuple(spec["shape"]), fill, dtype=DTYPES[spec["dtype"]], device=device)
    return inputs
