"""Convolution output channels as units, together with everything that depends on them (torch-pruning's graph).

torch-pruning (`torch_pruning.DependencyGraph`) traces one forward pass and groups every coupled dimension: a
convolution's output channels with its BatchNorm, the next layer's input channels (a Linear after a flatten gets
`h*w` columns per channel), and all convolutions whose outputs meet in a residual add. One group = one unit group
here: a unit is one root channel with all its coupled positions; masks zero them during training (the BatchNorm's
scale and shift too, so a masked channel outputs exact zeros) and `remove_channels` hands the pruned root channels
back to torch-pruning, which cuts every coupled layer (BatchNorm running statistics included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.pruners.slim.units import Slice, UnitGroup
from compress_sweeps.weights.selection import LayerSelection

CONVS = (nn.Conv1d, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _dependency_graph(model: nn.Module, example: Mapping[str, torch.Tensor]):
    import torch_pruning as tp

    was_training = model.training
    model.eval()  # tracing runs a forward pass: BatchNorm must not update its running statistics
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=dict(example))
    except Exception as error:  # the tracer fails in many ways; all mean "cannot find the dependencies"
        raise ConfigError(
            "pruner.units",
            ["channels"],
            f"needs a model torch-pruning can trace; tracing {type(model).__name__} failed: "
            f"{type(error).__name__}: {error}",
            problem="cannot trace this model",
        ) from error
    finally:
        model.train(was_training)


def _slices(names: Mapping[nn.Module, str], module: nn.Module, out: bool, idxs, roots, units: int) -> list[Slice]:
    """The parameter slices of one module in a group: positions per root channel (the same count for each)."""
    positions: list[list[int]] = [[] for _ in range(units)]
    for idx, root in zip(idxs, roots, strict=True):
        positions[root].append(int(idx))
    width = len(positions[0])
    if any(len(p) != width for p in positions):
        raise ConfigError(
            "pruner.units",
            ["channels"],
            f"needs the same number of positions per channel in every coupled layer ({names[module]} differs)",
            problem="cannot slice a channel group",
        )
    index = torch.tensor(positions, dtype=torch.long)
    name = names[module]
    if isinstance(module, NORMS):
        attrs = [attr for attr, _ in module.named_parameters(recurse=False)]  # affine: weight, bias
        return [Slice(name, module, attr, 0, index) for attr in attrs]
    if out:
        attrs = ["weight"] + (["bias"] if module.bias is not None else [])
        return [Slice(name, module, attr, 0, index) for attr in attrs]
    return [Slice(name, module, "weight", 1, index)]


def channel_units(
    model: nn.Module,
    example: Mapping[str, torch.Tensor],
    selection: LayerSelection,
    round_to: int,
) -> tuple[list[UnitGroup], object]:
    """One unit group per coupled group of output channels rooted at a convolution `selection` picks, and the
    graph. Layers its `exclude` names (the classifier head) keep their output channels whatever they couple to."""
    graph = _dependency_graph(model, example)
    names = {m: n for n, m in model.named_modules()}
    excluded = LayerSelection(selection.layer_types, (), selection.exclude, selection.key)
    ignored = [m for n, m in model.named_modules() if n and not excluded.selects_name(n)]
    chosen = set(selection.select(model, required=False).values())
    groups = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=list(CONVS)):
        root = group[0].dep.target.module
        if root not in chosen:
            continue
        units = len(group[0].idxs)
        slices, scope = [], []
        for item in group.items:
            module = item.dep.target.module
            if module not in names:  # torch-pruning's own nodes for functional ops (relu, add, flatten)
                continue
            out = graph.is_out_channel_pruning_fn(item.dep.handler)
            if not isinstance(module, (*CONVS, *NORMS, nn.Linear)) or (not out and isinstance(module, NORMS)):
                raise ConfigError(
                    "pruner.units",
                    ["channels"],
                    f"handles Conv, BatchNorm and Linear layers in a channel group; '{names[module]}' is a "
                    f"{type(module).__name__} coupled to '{names[root]}' (exclude it with pruner.exclude)",
                    problem="meets a layer it cannot slice",
                )
            slices += _slices(names, module, out, item.idxs, item.root_idxs, units)
            scope.append(names[module])
        kept_min = min(round_to, units)
        groups.append(UnitGroup("channels", names[root], slices, scope, min_kept=kept_min, owner=group))
    if not groups:
        raise selection.no_layer(model)
    return groups, graph


@torch.no_grad()
def remove_channels(groups: Sequence[UnitGroup]) -> None:
    """Cut the pruned channels out of every coupled layer (torch-pruning's group.prune, root indices)."""
    for group in groups:
        pruned = group.pruned.nonzero().squeeze(1).tolist()
        if pruned:
            group.owner.prune(idxs=pruned)
