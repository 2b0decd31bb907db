"""Discovering Neural Wirings (Wortsman, Farhadi & Rastegari, NeurIPS 2019): iterative magnitude pruning whose pruned
weights keep learning (Intel's Model Compression Research Package: `unstructured_neural_wiring`,
`block_structured_neural_wiring`, `uniform_neural_wiring`).

The forward pass uses W * M, M keeping the largest |W| in the pattern; the backward pass gives every weight, pruned
or kept, the gradient with respect to its masked value (the straight-through estimator), so a pruned weight goes on
moving and comes back at the next mask update once its magnitude beats a kept one. Masks are recomputed from |W| of
*all* weights at each scheduled update, not only of the kept ones, so masks do not only grow.

How it fits the hook protocol without parametrizations: the method keeps a dense copy of the selected weights, and
the module weights hold dense * mask for the forward and backward pass (autograd computes the gradient of a zeroed
weight all the same: that is the straight-through gradient). `before_optimizer_step` puts the dense values back, so
the optimizer updates every weight with its gradient and its own moments; `after_optimizer_step` copies the updated
dense values, recomputes the masks at scheduled steps and writes dense * mask back. Schedule, pattern, layer
selection and allocation are the `Pruner`'s groups with the magnitude criterion. A zero does not stay zero while
training (no `keeps_zeros`); after `finalize` the weights hold each group's target sparsity in its pattern.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.pruners.criteria import Criterion, Magnitude
from compress_sweeps.pruners.gradual.group import PruneGroup
from compress_sweeps.pruners.gradual.pruner import Pruner
from compress_sweeps.schema import chosen
from compress_sweeps.spec import CompressionSpec


class NeuralWiring:
    """`pruner=neural_wiring`: the Pruner's keys (pruner/base.yaml) with straight-through gradients to pruned weights.

    `criterion` must build the magnitude criterion (the YAML sets it); `groups` and `settings` are the Pruner's.
    """

    def __init__(
        self,
        criterion: chosen(Callable[[], Criterion], "pruner/criterion") = Magnitude,
        groups: Sequence[Mapping[str, Any]] | None = None,
        **settings: Any,
    ) -> None:
        probe = criterion()
        if not isinstance(probe, Magnitude):
            raise ConfigError(
                "pruner.criterion",
                probe.name,
                "must be magnitude: Discovering Neural Wirings keeps the largest |W| of all weights, pruned ones "
                "included",
                problem="is not magnitude",
            )
        self.pruner = Pruner(criterion, groups, **settings)
        self.weights: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        self.dense: list[torch.Tensor] = []  # every selected weight's own value; the module holds dense * mask
        self.regrown = 0.0  # fraction of the updated groups' weights revived by the latest mask update

    @torch.no_grad()
    def attach(self, model: nn.Module, context: RunContext) -> None:
        self.pruner.select(model, context)
        self.weights = [w for g in self.pruner.groups for w in g.weights]
        self.masks = [m for g in self.pruner.groups for m in g.masks]
        self.dense = [w.detach().clone() for w in self.weights]
        self.after_optimizer_step(0)  # a mask update scheduled at step 0 prunes before training

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        return loss

    @torch.no_grad()
    def before_optimizer_step(self, step: int) -> None:
        """Put the dense values back: the optimizer then updates every weight with its straight-through gradient."""
        if self._masked():
            torch._foreach_copy_(self.weights, self.dense)

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        """Keep the updated dense values, recompute the masks when scheduled, hand the module dense * mask."""
        updating = [g for g in self.pruner.groups if g.schedule.prunes_at(step)]
        if not updating and not self._masked():
            return  # no mask yet: the module weights are the dense weights
        torch._foreach_copy_(self.dense, self.weights)
        if updating:
            self._update_masks(updating, step)
        torch._foreach_mul_(self.weights, self.masks)

    def _update_masks(self, groups: list[PruneGroup], step: int) -> None:
        """Masks from |W| of every weight: each group's masks are reset to all kept first, so no weight scores -inf
        for having been pruned before (the module weights hold the dense values here)."""
        revived = total = 0
        for group in groups:
            before = [m.clone() for m in group.masks]
            for mask in group.masks:
                mask.fill_(1.0)
            group.update_masks(step)
            revived += sum(int(((b == 0) & (m != 0)).sum()) for b, m in zip(before, group.masks, strict=True))
            total += sum(m.numel() for m in group.masks)
        self.regrown = revived / total

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> nn.Module:
        """Fold the final masks into the weights (exact zeros) and drop the masks and the dense copy."""
        self.dense = []
        return self.pruner.finalize(model)

    def metrics(self) -> dict[str, float]:
        """The Pruner's target and achieved sparsity (counted from the module weights) and `pruner/regrown`."""
        row = self.pruner.metrics()
        return row | {"pruner/regrown": self.regrown} if row else row

    def spec(self) -> CompressionSpec:
        """Each group's target in its pattern after finalize; zeros are not kept while training."""
        return CompressionSpec(method="NeuralWiring", sparsity=self.pruner.spec().sparsity, shadows_weights=True)

    def check(self, total_steps: int, how: str = "") -> None:
        self.pruner.check(total_steps, how)

    def state_dict(self) -> dict[str, Any]:
        """The Pruner's masks and schedule position, and the dense weights (the model's state holds dense * mask)."""
        return {"pruner": self.pruner.state_dict(), "dense": list(self.dense), "regrown": self.regrown}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.pruner.load_state_dict(state["pruner"])
        for dense, saved in zip(self.dense, state["dense"], strict=True):
            dense.copy_(saved)
        self.regrown = state["regrown"]
        if self._masked():
            torch._foreach_copy_(self.weights, self.dense)
            torch._foreach_mul_(self.weights, self.masks)

    def _masked(self) -> bool:
        return any(g.pruned_any for g in self.pruner.groups)
