"""`OneShotPruner`: post-training pruning (magnitude, Wanda, SparseGPT) at attach, then masks locked.

At `attach` the pruner draws `calibration_examples` training examples with its own seeded generator, calibrates
the selected layers sequentially on them (sequential.py: each layer sees the outputs of the already-pruned layers
before it) and prunes every layer once to `target_sparsity` under `pattern`. From then on it behaves like
`PatternLock`: with `trainer.max_steps=0` the run ends there (calibrate and compress, no training); with steps it is
one-shot pruning + recovery fine-tuning, gradients of pruned weights masked before each optimizer step and weights
re-masked after it. `finalize` folds the masks into the weights.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compress_sweeps.errors import ConfigError, no_layer_error
from compress_sweeps.hooks import RunContext
from compress_sweeps.pruners.oneshot.calibration import calibration_batches, calibration_problem
from compress_sweeps.pruners.oneshot.magnitude import Magnitude
from compress_sweeps.pruners.oneshot.sequential import calibrate_sequentially
from compress_sweeps.pruners.oneshot.sparsegpt import SparseGPT
from compress_sweeps.pruners.oneshot.wanda import Wanda
from compress_sweeps.weights.patterns import NMPattern, as_matrix, parse_pattern
from compress_sweeps.weights.selection import DEFAULT_EXCLUDE
from compress_sweeps.pruners.targets import LayerTarget, layer_classes, mask_grads, remove_mask, select_layers

METHODS = ("magnitude", "wanda", "sparsegpt")
DEFAULT_SPARSITY = 0.5  # when target_sparsity is null and the pattern does not fix it: the papers' headline setting


class OneShotPruner:
    """Prune the selected Linear/Conv weights once, at attach, by `method`; keep them pruned while training on.

    `method`: `magnitude` (|W| per layer, no data), `wanda` (|W| * ||X||, per output row) or `sparsegpt` (OBS
    reconstruction per layer, with `damping` and `block_size`). `seed` draws the calibration examples.
    """

    def __init__(
        self,
        method: str = "sparsegpt",
        target_sparsity: float | None = None,
        pattern: str = "1x1",
        calibration_examples: int = 256,
        calibration_batch_size: int = 16,
        seed: int = 0,
        damping: float = 0.01,
        block_size: int = 128,
        layer_types: Sequence[str] = ("Linear", "Conv2d"),
        include: Sequence[str] = (),
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        skip_incompatible: bool = False,
    ) -> None:
        if method not in METHODS:
            raise ConfigError("pruner.method", method, f"must be one of {list(METHODS)}", problem="is unknown")
        self.pattern = parse_pattern(pattern, "pruner.pattern")
        if isinstance(self.pattern, NMPattern):
            implied = self.pattern.max_fraction
            if target_sparsity is not None and abs(target_sparsity - implied) > 1e-9:
                raise ConfigError(
                    "pruner.target_sparsity",
                    target_sparsity,
                    f"must be null or {implied:g}: pruner.pattern={self.pattern.label} prunes exactly 1 - N/M",
                    problem=f"contradicts pruner.pattern={self.pattern.label}",
                )
            target_sparsity = implied
        self.sparsity = DEFAULT_SPARSITY if target_sparsity is None else float(target_sparsity)
        checks = {  # key: (value, allowed?, what is allowed)
            "target_sparsity": (target_sparsity, 0.0 < self.sparsity < 1.0, "in (0, 1) or null"),
            "calibration_examples": (calibration_examples, _int(calibration_examples, 1), "an integer >= 1"),
            "calibration_batch_size": (calibration_batch_size, _int(calibration_batch_size, 1), "an integer >= 1"),
            "seed": (seed, _int(seed, 0), "an integer >= 0"),
            "damping": (damping, isinstance(damping, int | float) and 0.0 <= damping < 1.0, "in [0, 1)"),
            "block_size": (block_size, _int(block_size, 1), "an integer >= 1"),
        }
        for key, (value, ok, allowed) in checks.items():
            if not ok:
                raise ConfigError(f"pruner.{key}", value, f"must be {allowed}")
        methods = {"magnitude": Magnitude, "wanda": Wanda, "sparsegpt": lambda: SparseGPT(damping, block_size)}
        self.method = methods[method]()
        if problem := self.method.problem(self.pattern):
            raise ConfigError("pruner.pattern", self.pattern.label, problem, problem=f"does not suit {method}")
        self.classes = layer_classes(list(layer_types), "pruner.layer_types")
        self.include, self.exclude, self.skip = list(include), list(exclude), skip_incompatible
        self.examples, self.batch_size, self.seed = calibration_examples, calibration_batch_size, seed
        self.targets: list[LayerTarget] = []
        self.timing = {"calibration_s": 0.0, "prune_s": 0.0}

    def attach(self, model: nn.Module, context: RunContext) -> None:
        self.targets, _ = select_layers(
            model, self.classes, self.include, self.exclude, self.pattern, "mean", self.skip, set(), "pruner."
        )
        if not self.targets:
            raise no_layer_error(model, "pruner.", self.include, self.exclude, [c.__name__ for c in self.classes])
        self._weights = [t.weights[0] for t in self.targets]
        self._masks = [t.masks[0] for t in self.targets]
        self._warn_if_untrained(context.extras.get("new_parameters", ()))
        layers = {t.name: t.modules[0] for t in self.targets}
        if not self.method.needs_data:
            started = time.perf_counter()
            for name, module in layers.items():
                self._prune(name, module, None)
            self.timing = {"calibration_s": 0.0, "prune_s": time.perf_counter() - started}
        else:
            for name, module in layers.items():
                if problem := calibration_problem(module):
                    raise ConfigError("pruner.exclude", self.exclude, problem, problem=f"keeps layer '{name}'")
            if context.train_set is None:
                raise ValueError(f"pruner.method={self.method.name} calibrates on the training split: none was given")
            batches = calibration_batches(
                context.train_set, context.input_keys, self.examples, self.batch_size, self.seed
            )
            device = next(model.parameters()).device
            self.timing = calibrate_sequentially(model, layers, batches, self.method.new_statistic, self._prune, device)
        print(
            f"one-shot {self.method.name} {self.pattern.label} at {self.sparsity:g}: {len(layers)} layers, "
            f"calibration {self.timing['calibration_s']:.1f} s, pruning {self.timing['prune_s']:.1f} s",
            flush=True,
        )

    @torch.no_grad()
    def _prune(self, name: str, module: nn.Module, statistic: Any) -> None:
        """Prune one layer in place (the forward passes after this see it pruned) and record its keep-mask."""
        target = next(t for t in self.targets if t.name == name)
        weight, mask = target.weights[0], target.masks[0]
        pruned_weight, pruned = self.method.prune(as_matrix(weight).float(), statistic, self.pattern, self.sparsity)
        mask.copy_((~pruned).reshape(mask.shape).to(mask.dtype))
        weight.copy_(pruned_weight.reshape(weight.shape).to(weight.dtype)).mul_(mask)

    def _warn_if_untrained(self, new_parameters: Sequence[str]) -> None:
        if new_parameters:
            shown = ", ".join(new_parameters[:4]) + (", ..." if len(new_parameters) > 4 else "")
            warnings.warn(
                f"pruner.method={self.method.name} prunes a model whose {shown} were initialised at random (a fresh "
                "classification head): one-shot pruning preserves what a trained model computes, so start from a "
                "fine-tuned run (model=from_run model.folder=<run folder>) or fine-tune after pruning",
                stacklevel=2,
            )

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        return loss

    @torch.no_grad()
    def before_optimizer_step(self, step: int) -> None:
        mask_grads(self._weights, self._masks)

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        torch._foreach_mul_(self._weights, self._masks)

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> nn.Module:
        """Fold the masks into the weights (exact zeros stay) and drop the mask buffers."""
        for target in self.targets:
            target.weights[0].mul_(target.masks[0])
            remove_mask(target.modules[0])
        return model

    def state_dict(self) -> dict[str, Any]:
        """The masks chosen at attach (a resumed run re-calibrates at attach, then gets these masks back)."""
        return {"masks": list(self._masks)}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for mask, saved in zip(self._masks, state["masks"], strict=True):
            mask.copy_(saved)

    def layer_patterns(self) -> dict[str, str]:
        """{parameter name -> pattern label} of every pruned weight (for results.json and its pattern check)."""
        return {name: label for t in self.targets for name, label in t.labels().items()}

    def metrics(self) -> dict[str, float]:
        """Target and achieved sparsity (counted from the weights) and the seconds calibration and pruning took."""
        if not self.targets:
            return {}
        zeros = sum(int((w == 0).sum()) for w in self._weights)
        return {
            "pruner/target_sparsity": self.sparsity,
            "pruner/sparsity": zeros / sum(w.numel() for w in self._weights),
            "pruner/calibration_s": self.timing["calibration_s"],
            "pruner/prune_s": self.timing["prune_s"],
        }


def _int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
