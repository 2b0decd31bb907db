"""The finalized model's shapes and costs against the dense reference, counted from the modules themselves.

`compression.structure` of results.json: the head count of every self-attention module, the output width of every
Linear / Conv layer that changed (FFN widths, conv channels), the length of every block list that changed, and the
parameters and FLOPs of the whole model and of the methods' prunable part (`StructurePromise.scope`, module names
in the dense model) before and after. Nothing outside the part changes shape (the promise), so what the whole
model lost is what the part lost: `prunable_after = prunable_before - (model_before - model_after)`, each side
counted. FLOPs are counted by FlopCounterMode on inputs of the shapes the promise records (one training example),
so `verify` re-counts them from the run folder alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compress_sweeps.models.costs import example_inputs, module_flops, scope_cost, total_params
from compress_sweeps.models.structure import CONVS, heads_of
from compress_sweeps.spec import StructurePromise


def layer_shapes(model: nn.Module, reference: nn.Module) -> dict[str, Any]:
    """Heads per attention module, widths that changed, block lists that changed (kept vs the reference)."""
    dense = dict(reference.named_modules())
    layers: dict[str, dict[str, Any]] = {}
    lists: dict[str, dict[str, int]] = {}
    inside_attention: list[str] = []
    for name, module in model.named_modules():
        before = dense.get(name)
        if isinstance(module, nn.ModuleList) and before is not None and len(module) != len(before):
            lists[name] = {"kept": len(module), "total": len(before)}
        if (heads := heads_of(module)) is not None:
            layers[name] = {"kind": "heads", "kept": heads, "total": heads_of(before) if before is not None else None}
            inside_attention.append(name + ".")
            continue
        if not isinstance(module, (nn.Linear, *CONVS)) or any(name.startswith(a) for a in inside_attention):
            continue
        width = module.weight.shape[0]
        total = before.weight.shape[0] if isinstance(before, (nn.Linear, *CONVS)) else None
        if width != total:
            layers[name] = {"kind": "channels" if isinstance(module, CONVS) else "width", "kept": width, "total": total}
    return {"layers": layers, "blocks": lists}


@torch.no_grad()
def costs(
    model: nn.Module, reference: nn.Module, promises: Sequence[StructurePromise], example: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """Parameters and FLOPs of the whole model and of the promised prunable part, before (reference) and after."""
    flops_before, flops_after = module_flops(reference, example), module_flops(model, example)
    params = {"model_before": total_params(reference), "model_after": total_params(model)}
    flops = {"model_before": flops_before[""], "model_after": flops_after[""]}
    scope = sorted({name for p in promises for name in p.scope})
    report: dict[str, Any] = {"params": params, "flops": flops}
    if scope:
        for counts, per_module in ((params, None), (flops, flops_before)):
            before = scope_cost(reference, scope, per_module)
            counts["prunable_before"] = before
            counts["prunable_after"] = before - (counts["model_before"] - counts["model_after"])
        report["removed"] = {
            key: 1.0 - counts["prunable_after"] / counts["prunable_before"] if counts["prunable_before"] else 0.0
            for key, counts in (("params", params), ("flops", flops))
        }
    return report


def structure_report(
    model: nn.Module,
    reference: nn.Module,
    promises: Sequence[StructurePromise],
    fallback: Mapping[str, torch.Tensor],
) -> dict[str, Any]:
    """`compression.structure`: `layer_shapes` and `costs`, FLOPs on the promise's example shapes (`fallback`, one
    eval example, when no method recorded any)."""
    device = next(model.parameters()).device
    shapes = next((p.example for p in promises if p.example), None)
    example = example_inputs(shapes, device) if shapes else dict(fallback)
    report = layer_shapes(model, reference) | costs(model, reference, promises, example)
    return report | {"example": {k: list(v.shape) for k, v in example.items()}}
