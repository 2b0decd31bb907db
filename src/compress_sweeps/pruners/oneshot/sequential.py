"""Sequential calibration: every layer is calibrated on the inputs produced by the already-pruned layers before it.

This is the scheme of SparseGPT (Frantar & Alistarh 2023) and Wanda (Sun et al. 2023), made generic:

- Transformers: the blocks (the outermost `nn.ModuleList` holding every selected layer, e.g. BERT's
  `encoder.layer`) run one after another on cached inputs. The first block's inputs are captured once (a forward
  pre-hook stops the forward pass there); a block's outputs, computed after its layers were pruned, become the next
  block's inputs, and its other arguments (the attention mask...) are reused for every block, as in the references.
  One probe forward pass first checks that the blocks really form such a chain; if not, the whole model is the stage.
- Other models (a CNN, or layers outside the blocks): the whole model is the one stage and runs from its inputs.

Within a stage, layers are taken in the order the forward pass calls them; layers fed the very same input tensor
(query, key and value) form one group with one shared statistic (one Hessian). A group's forward passes stop right
after its last layer was called, and the group is pruned before the next group is calibrated, so at most one
Hessian exists at a time and every group sees the pruned layers before it. What finished before a group's first
layer is replayed from the pass that first computed it with pruned weights (replay.py), so a block costs about one
forward pass over the calibration set, not one per group.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from compress_sweeps.pruners.oneshot.calibration import input_rows, token_mask
from compress_sweeps.pruners.oneshot.replay import Replay, Trace

Call = tuple[tuple[Any, ...], dict[str, Any]]  # the positional and keyword arguments of one forward call


class Statistic(Protocol):
    def add(self, rows: torch.Tensor) -> None: ...


NewStatistic = Callable[[nn.Module], Statistic]
Prune = Callable[[str, nn.Module, Statistic], None]


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the inputs it needs were seen."""


def find_blocks(model: nn.Module, layers: Mapping[str, nn.Module]) -> list[nn.Module] | None:
    """The blocks of the outermost ModuleList (of 2+ blocks) that holds every layer of `layers`, or None."""
    wanted = {id(m) for m in layers.values()}
    for _, child in model.named_modules():
        if isinstance(child, nn.ModuleList) and len(child) > 1 and wanted <= {id(m) for m in child.modules()}:
            return list(child)
    return None


def _hidden(call: Call) -> torch.Tensor:
    args, kwargs = call
    return args[0] if args else next(iter(kwargs.values()))


def _with_hidden(call: Call, hidden: torch.Tensor) -> Call:
    args, kwargs = call
    if args:
        return (hidden, *args[1:]), kwargs
    key = next(iter(kwargs))
    return (), {**kwargs, key: hidden}


def _output(outputs: Any) -> torch.Tensor:
    return outputs[0] if isinstance(outputs, tuple | list) else outputs


def _run(module: nn.Module, call: Call) -> Any:
    """`module(*args, **kwargs)`, or None when a hook stopped the pass."""
    try:
        return module(*call[0], **call[1])
    except StopForward:
        return None


def _chained(model: nn.Module, blocks: Sequence[nn.Module], batch: Mapping[str, torch.Tensor]) -> bool:
    """Whether one forward pass calls the blocks once each, in order, each on the previous block's output."""
    seen: list[tuple[int, Call]] = []
    outputs: list[Any] = []
    handles = []
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(lambda m, a, k, i=i: seen.append((i, (a, k))), with_kwargs=True))
        handles.append(block.register_forward_hook(lambda m, a, o: outputs.append(_output(o))))
    try:
        model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    if [i for i, _ in seen] != list(range(len(blocks))):
        return False
    return all(_hidden(seen[i + 1][1]) is outputs[i] for i in range(len(blocks) - 1))


def _capture(module: nn.Module, model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]]) -> list[Call]:
    """The arguments `module` is called with when `model` runs on each batch (the pass stops there)."""
    calls: list[Call] = []

    def hook(_, args, kwargs):
        calls.append((args, dict(kwargs)))
        raise StopForward

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            _run(model, ((), dict(batch)))
    finally:
        handle.remove()
    return calls


def _signature(module: nn.Module) -> tuple:
    """Layers with equal inputs share one statistic only if they turn the input into the same rows of X."""
    if isinstance(module, nn.Linear):
        return ("Linear", module.in_features)
    return (type(module).__name__, module.kernel_size, module.stride, module.padding, module.dilation)


def _groups(trace: Trace, layers: Mapping[str, nn.Module]) -> list[tuple[list[str], int]]:
    """Layers grouped by shared input (in the traced pass), in first-call order, each with the layer calls a pass
    must see before it can stop."""
    idle = [name for name, module in layers.items() if module not in trace.calls]
    if idle:
        raise RuntimeError(f"layers {idle} did not run in the calibration forward pass; exclude them (pruner.exclude)")
    groups: dict[tuple, list[str]] = {}
    for name in sorted(layers, key=lambda name: trace.start[layers[name]]):
        module = layers[name]
        groups.setdefault((id(trace.first_input[module]), _signature(module)), []).append(name)
    calls = {name: trace.calls[module] for name, module in layers.items()}
    # layers called once each were all called on the group's one input tensor: its first call has all the rows
    return [
        (names, 1 if all(calls[n] == 1 for n in names) else sum(calls[n] for n in names)) for names in groups.values()
    ]


class _Collect:
    """Forward pre-hook of a group's layers: add their input rows to the group's statistic, then stop the pass
    after the group's last call (the rest of the stage does not change the group's inputs)."""

    def __init__(self, statistic: Statistic, expected: int) -> None:
        self.statistic, self.expected = statistic, expected
        self.mask: torch.Tensor | None = None  # the current batch's real tokens
        self.calls = 0
        self.last: torch.Tensor | None = None  # the input already added (query, key and value share one)

    def __call__(self, module: nn.Module, args: tuple) -> None:
        if args[0] is not self.last:  # the group's layers see the same tensor: its rows count once
            self.statistic.add(input_rows(module, args[0], self.mask))
            self.last = args[0]
        self.calls += 1
        if self.calls == self.expected:
            raise StopForward


def _calibrate_stage(
    stage: nn.Module,
    layers: Mapping[str, nn.Module],
    calls: Sequence[Call],
    masks: Sequence[torch.Tensor | None],
    new_statistic: NewStatistic,
    prune: Prune,
    timing: dict[str, float],
    outputs: bool = False,
) -> list[torch.Tensor] | None:
    """Calibrate and prune the groups of `stage` in call order; with `outputs`, then run the pruned stage on every
    call and return its outputs. Modules finished before a group's first layer are replayed (replay.py)."""
    trace = Trace(stage, lambda s: _run(s, calls[0]), watched=layers.values())
    replay = Replay(trace)
    for names, expected in _groups(trace, layers):
        collect = _Collect(new_statistic(layers[names[0]]), expected)
        handles = [layers[name].register_forward_pre_hook(collect) for name in names]
        try:
            with replay.before(min(trace.start[layers[name]] for name in names)) as select:
                for batch, (call, mask) in enumerate(zip(calls, masks, strict=True)):
                    select(batch)
                    collect.mask, collect.calls = mask, 0
                    _run(stage, call)
                    collect.last = None
        finally:
            for handle in handles:
                handle.remove()
        started = time.perf_counter()
        for name in names:
            prune(name, layers[name], collect.statistic)
        timing["prune_s"] += time.perf_counter() - started
    if not outputs:
        return None
    hidden = []
    with replay.before(record=False) as select:  # the stage's outputs: nothing after them is calibrated here
        for batch, call in enumerate(calls):
            select(batch)
            hidden.append(_output(stage(*call[0], **call[1])))
    return hidden


@torch.no_grad()
def calibrate_sequentially(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    batches: Sequence[Mapping[str, torch.Tensor]],
    new_statistic: NewStatistic,
    prune: Prune,
    device: torch.device,
) -> dict[str, float]:
    """Calibrate and prune `layers` ({name: module} of `model`) one group after another on `batches`.

    `new_statistic(module)` makes the accumulator a group's inputs are fed to (rows of X, see calibration.py);
    `prune(name, module, statistic)` must prune the layer in place, so the forward passes after it see the pruned
    weights. Runs in eval mode (no dropout) on `device`; returns the seconds spent calibrating (forward passes and
    accumulating) and pruning.
    """
    started = time.perf_counter()
    timing = {"calibration_s": 0.0, "prune_s": 0.0}
    batches = [{k: v.to(device) for k, v in batch.items()} for batch in batches]
    masks = [token_mask(batch) for batch in batches]
    training = model.training
    model.eval()
    try:
        blocks = find_blocks(model, layers)
        if blocks is None or not _chained(model, blocks, {k: v[:2] for k, v in batches[0].items()}):
            _calibrate_stage(model, layers, [((), b) for b in batches], masks, new_statistic, prune, timing)
        else:
            calls = _capture(blocks[0], model, batches)
            for i, block in enumerate(blocks):
                inside = {n: m for n, m in layers.items() if any(m is x for x in block.modules())}
                last = i + 1 == len(blocks)
                if inside:
                    hidden = _calibrate_stage(block, inside, calls, masks, new_statistic, prune, timing, not last)
                elif not last:
                    hidden = [_output(block(*call[0], **call[1])) for call in calls]
                if not last:  # the pruned block's outputs feed the next block
                    calls = [_with_hidden(call, h) for call, h in zip(calls, hidden, strict=True)]
    finally:
        model.train(training)
    timing["calibration_s"] = time.perf_counter() - started - timing["prune_s"]
    return timing
