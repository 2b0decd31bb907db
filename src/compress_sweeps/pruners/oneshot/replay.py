"""Replaying what a calibration pass has already computed, so each layer of a stage runs about once.

Calibrating a stage group by group runs it on every calibration batch once per group (up to the group's last
layer) and once more for its outputs: about three forward passes of a transformer block, which made the forward
passes most of SparseGPT's and Wanda's time. But a submodule that finishes before the group's first layer is called
holds only layers that are already pruned, and it gets the same inputs in every later pass: its outputs are
recorded in the first pass after its last layer was pruned and replayed, per batch, in the passes after that. So a
transformer block's attention runs once with its pruned weights and is then replayed while the FFN is calibrated,
and every layer computes its pruned outputs once: about one forward pass per block.

Replay changes no value: in eval mode a module's outputs depend on its weights and inputs only, and both are fixed
(outputs are recorded and replayed as copies, so an in-place operation downstream changes neither). Only
submodules called once per pass, whose own submodules are called at most once, are replayed; a replayed module is
swapped into its parent for the pass (`_Replayed`) and put back after it.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def _inside(module: nn.Module, others: Sequence[nn.Module]) -> bool:
    """Whether `module` is a submodule (at any depth, not itself) of one of `others`."""
    return any(o is not module and any(s is module for s in o.modules()) for o in others)


def _copy(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.clone()
    if isinstance(outputs, tuple | list):
        return type(outputs)(_copy(o) for o in outputs)
    if isinstance(outputs, dict):
        return type(outputs)({k: _copy(v) for k, v in outputs.items()})
    return outputs


class Trace:
    """When each submodule of `stage` starts and finishes in one forward pass (`run(stage)`), and how often it is
    called: positions count the calls and returns of all submodules, in order. For the `watched` modules, also the
    input of their first call (kept alive, so tensor identities say which layers share an input)."""

    def __init__(self, stage: nn.Module, run: Callable[[nn.Module], Any], watched: Iterable[nn.Module] = ()) -> None:
        self.stage = stage
        self.start: dict[nn.Module, int] = {}  # the first call of every submodule that ran
        self.end: dict[nn.Module, int] = {}
        self.calls: dict[nn.Module, int] = {}
        self.first_input: dict[nn.Module, Any] = {}
        watched = set(watched)
        position = itertools.count()

        def enter(module: nn.Module, args: tuple) -> None:
            if module not in self.start:
                self.start[module] = next(position)
                if module in watched:
                    self.first_input[module] = args[0]
            else:
                next(position)
            self.calls[module] = self.calls.get(module, 0) + 1

        def leave(module: nn.Module, args: tuple, output: Any) -> None:
            self.end[module] = next(position)

        handles = []
        for module in stage.modules():
            if module is not stage:
                handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
        try:
            run(stage)
        finally:
            for handle in handles:
                handle.remove()
        self.once = {m for m in self.end if self.calls[m] == 1 and all(self.calls.get(s, 0) <= 1 for s in m.modules())}

    def finished_before(self, position: float) -> list[nn.Module]:
        """The submodules called once that returned before `position`, outermost first (a parent before its
        children): their inputs and weights no longer change while the layers called after them are calibrated."""
        return sorted((m for m in self.once if self.end[m] < position), key=self.start.__getitem__)


class _Replayed(nn.Module):
    """Stands in for a module during a pass: returns a copy of its recorded output for the current batch."""

    def __init__(self, outputs: Sequence[Any]) -> None:
        super().__init__()
        self.outputs, self.batch = outputs, 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return _copy(self.outputs[self.batch])


class Replay:
    """Per-batch outputs of the finished submodules of one stage, recorded in one pass and replayed in the next."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.outputs: dict[nn.Module, list[Any]] = {}
        self.places: dict[nn.Module, list[tuple[nn.Module, str]]] = defaultdict(list)  # where each is registered
        for parent in trace.stage.modules():
            for name, child in parent._modules.items():
                if child in trace.once:
                    self.places[child].append((parent, name))

    @contextmanager
    def before(self, position: float = math.inf, record: bool = True) -> Iterator[Any]:
        """A pass in which every module that finished before `position` is replayed (outputs recorded in an earlier
        pass) or, with `record`, recorded (once its own recorded submodules were replayed); yields
        `select(batch_index)`."""
        finished = self.trace.finished_before(position)
        replayed: list[nn.Module] = []
        recorded: list[nn.Module] = []
        for module in finished:  # outermost first: nothing inside a replayed module runs
            if _inside(module, replayed):
                continue
            if module in self.outputs:
                replayed.append(module)
            elif record and not _inside(module, recorded):
                recorded.append(module)
        stand_ins = [(_Replayed(self.outputs[m]), m) for m in replayed]
        new: dict[nn.Module, list[Any]] = {m: [] for m in recorded}
        handles = [m.register_forward_hook(lambda m, a, o: new[m].append(_copy(o))) for m in recorded]
        for stand_in, module in stand_ins:
            for parent, name in self.places[module]:
                setattr(parent, name, stand_in)

        def select(batch: int) -> None:
            for stand_in, _ in stand_ins:
                stand_in.batch = batch

        try:
            yield select
        finally:
            for handle in handles:
                handle.remove()
            for _, module in stand_ins:
                for parent, name in self.places[module]:
                    setattr(parent, name, module)
        self.outputs.update(new)
        outermost = list(self.outputs)
        for module in outermost:  # only the outermost recorded modules are replayed from now on
            if _inside(module, outermost):
                del self.outputs[module]
