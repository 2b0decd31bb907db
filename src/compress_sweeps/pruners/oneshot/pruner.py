"""`OneShotPruner`: post-training pruning by a one-shot method (magnitude, Wanda, SparseGPT) at attach, then masks
locked. The method is its own config (`pruner/method=<name>`, method.py's protocol); the pruner does the rest.

At `attach` the pruner draws `calibration_examples` training examples with its own seeded generator
(tasks/sample.py), calibrates the selected layers sequentially on them (sequential.py: each layer sees the outputs
of the already-pruned layers before it) and prunes every layer once to `target_sparsity` under `pattern`. From then
on it behaves like `PatternLock`: with `trainer=none` (0 optimizer steps) the run ends there (calibrate and
compress, no training); with steps it is one-shot pruning + recovery fine-tuning, gradients of pruned weights
masked before each optimizer step and weights re-masked after it. `finalize` folds the masks into the weights.

A zero the starting model already has is pruned first and stays zero (`keeps_zeros`), so a pruned model pruned
again keeps its zeros. A run resumed from a checkpoint does not calibrate again: the checkpoint restores the pruned
weights and the masks (`state_dict`), and the calibration and pruning times of the first attempt with them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.pruners.oneshot.calibration import calibration_problem
from compress_sweeps.pruners.oneshot.method import Goal, OneShotMethod
from compress_sweeps.pruners.oneshot.sequential import calibrate_sequentially
from compress_sweeps.pruners.targets import LayerTarget, LockedMasks, select_layers
from compress_sweeps.schema import Regexes, check_arguments, chosen
from compress_sweeps.spec import CompressionSpec, SparsityPromise
from compress_sweeps.tasks.sample import calibration_batches
from compress_sweeps.weights.patterns import as_matrix, parse_pattern, resolve_sparsity
from compress_sweeps.weights.selection import DEFAULT_EXCLUDE, DEFAULT_LAYER_TYPES, LayerSelection

DEFAULT_SPARSITY = 0.5  # when target_sparsity is null and the pattern does not fix it: the papers' headline setting

log = logging.getLogger(__name__)


class OneShotPruner:
    """Prune the selected Linear/Conv weights once, at attach, by `method`; keep them pruned while training on.

    `method`: a `OneShotMethod` (conf/pruner/method/: `magnitude` |W| per layer, no data; `wanda` |W| * ||X|| per
    output row; `sparsegpt` OBS reconstruction per layer). `block_reduce`: a block's (or channel's) score from its
    elements' scores. `seed` draws the calibration examples.
    `untrained`: what to do when the model still holds randomly initialised parameters (a pretrained encoder's new
    classification head) in a run of 0 training steps, whose accuracy then says nothing about the pruning:
    `error` (the default) or `warn`. With training steps the head trains after pruning: a warning either way.
    """

    def __init__(
        self,
        method: chosen(OneShotMethod, "pruner/method"),
        target_sparsity: Annotated[float, Field(gt=0, lt=1)] | None = None,
        pattern: str = "1x1",
        block_reduce: Literal["sum", "mean", "max"] = "sum",
        calibration_examples: Annotated[int, Field(ge=1)] = 256,
        calibration_batch_size: Annotated[int, Field(ge=1)] = 16,
        seed: Annotated[int, Field(ge=0)] = 0,
        layer_types: Sequence[str] = DEFAULT_LAYER_TYPES,
        include: Regexes = (),
        exclude: Regexes = DEFAULT_EXCLUDE,
        skip_incompatible: bool = False,
        untrained: Literal["error", "warn"] = "error",
    ) -> None:
        arguments = {k: v for k, v in locals().items() if k != "self"}
        check_arguments(OneShotPruner, arguments, "pruner.")  # the signature is the schema, also for Python callers
        if not isinstance(method, OneShotMethod):
            raise ConfigError("pruner.method", method, "must be a one-shot method (conf/pruner/method/)", "is unknown")
        self.pattern = parse_pattern(pattern, "pruner.pattern")
        self.sparsity = resolve_sparsity(self.pattern, target_sparsity, DEFAULT_SPARSITY, "pruner.target_sparsity")
        self.goal = Goal(self.pattern, self.sparsity, block_reduce)
        self.method = method
        if problem := method.problem(self.pattern):
            raise ConfigError("pruner.pattern", self.pattern.label, problem, problem=f"does not suit {method.name}")
        self.selection = LayerSelection(layer_types, include, exclude, "pruner.")
        self.skip, self.untrained = skip_incompatible, untrained
        self.examples, self.batch_size, self.seed = calibration_examples, calibration_batch_size, seed
        self.targets: list[LayerTarget] = []
        self.locked = LockedMasks({})
        self.timing = {"calibration_s": 0.0, "prune_s": 0.0}

    def attach(self, model: nn.Module, context: RunContext) -> None:
        self.targets, _ = select_layers(model, self.selection, self.pattern, "sum", self.skip, set())
        if not self.targets:
            raise self.selection.no_layer(model)
        layers = {t.name: t.modules[0] for t in self.targets}
        self.locked = LockedMasks(layers)
        if self.method.needs_data:
            for name, module in layers.items():
                if problem := calibration_problem(module):
                    exclude = list(self.selection.exclude)
                    raise ConfigError("pruner.exclude", exclude, problem, problem=f"keeps layer '{name}'")
        if context.resumes_from is not None:  # the checkpoint restores the pruned weights, the masks and the times
            log.info("one-shot %s: resuming at step %d, not calibrating again", self.method.name, context.resumes_from)
            return
        self._check_trained(context)
        if not self.method.needs_data:
            started = time.perf_counter()
            for name, module in layers.items():
                self._prune(name, module, None)
            self.timing = {"calibration_s": 0.0, "prune_s": time.perf_counter() - started}
        else:
            if context.train_set is None:
                raise ValueError(f"pruner/method={self.method.name} calibrates on the training split: none was given")
            keys = context.input_keys
            batches = calibration_batches(context.train_set, keys, self.examples, self.batch_size, self.seed)
            device = next(model.parameters()).device
            self.timing = calibrate_sequentially(model, layers, batches, self.method.new_statistic, self._prune, device)
        log.info(
            "one-shot %s %s at %g: %d layers, calibration %.1f s, pruning %.1f s",
            self.method.name,
            self.pattern.label,
            self.sparsity,
            len(layers),
            self.timing["calibration_s"],
            self.timing["prune_s"],
        )

    def _check_trained(self, context: RunContext) -> None:
        """Name randomly initialised parameters: an error in a 0-step run (unless `untrained=warn`), else a warning."""
        if not context.untrained:
            return
        shown = ", ".join(context.untrained[:4]) + (", ..." if len(context.untrained) > 4 else "")
        what = (
            f"the model's {shown} hold their random initialisation (a new classification head): one-shot pruning "
            "keeps what a trained model computes"
        )
        if context.total_steps == 0 and self.untrained == "error":
            raise ConfigError(
                "pruner.untrained",
                self.untrained,
                f"must be warn to prune and evaluate a model that was never trained: {what}; start from a trained "
                "model (model=finetuned, or model=from_run model.folder=<a dense run>)",
                problem="stops a 0-step run",
            )
        steps = context.total_steps
        log.warning("pruner/method=%s: %s; the %d training steps train it after pruning", self.method.name, what, steps)

    @torch.no_grad()
    def _prune(self, name: str, module: nn.Module, statistic: Any) -> None:
        """Prune one layer in place (the forward passes after this see it pruned) and record its keep-mask."""
        target = next(t for t in self.targets if t.name == name)
        weight, mask = target.weights[0], target.masks[0]
        matrix = as_matrix(weight).float()
        zeros = matrix == 0  # the starting model's zeros: pruned first, and kept (keeps_zeros)
        pruned_weight, pruned = self.method.prune(matrix, statistic, self.goal, zeros)
        keep = ~pruned & ~zeros
        mask.copy_(keep.reshape(mask.shape).to(mask.dtype))
        weight.copy_(pruned_weight.reshape(weight.shape).to(weight.dtype)).mul_(mask)

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        return loss

    def before_optimizer_step(self, step: int) -> None:
        self.locked.before_optimizer_step(step)

    def after_optimizer_step(self, step: int) -> None:
        self.locked.after_optimizer_step(step)

    def finalize(self, model: nn.Module) -> nn.Module:
        """Fold the masks into the weights (exact zeros stay) and drop the mask buffers."""
        return self.locked.finalize(model)

    def state_dict(self) -> dict[str, Any]:
        """The masks chosen at attach and the seconds calibration and pruning took (a resumed run reports them)."""
        return {**self.locked.state_dict(), "timing": dict(self.timing)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.locked.load_state_dict(state)
        self.timing = dict(state["timing"])

    def spec(self) -> CompressionSpec:
        """Every pruned weight at `target_sparsity` in `pattern`; the masks are locked, so zeros stay zeros."""
        labels = {name: label for t in self.targets for name, label in t.labels().items()}
        promise = SparsityPromise(labels, self.sparsity)
        return CompressionSpec(f"OneShotPruner(method={self.method.name})", sparsity=(promise,), keeps_zeros=True)

    def check(self, total_steps: int, how: str = "") -> None:
        """Any length works: 0 steps compresses only, more steps fine-tune with the masks locked."""

    def metrics(self) -> dict[str, float]:
        """Target and achieved sparsity (counted from the weights) and the seconds calibration and pruning took."""
        if not self.targets:
            return {}
        return {
            "pruner/target_sparsity": self.sparsity,
            "pruner/sparsity": self.locked.sparsity(),
            "pruner/calibration_s": self.timing["calibration_s"],
            "pruner/prune_s": self.timing["prune_s"],
        }
