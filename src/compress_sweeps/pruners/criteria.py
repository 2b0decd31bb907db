"""Importance scores: which weights matter. Higher score = keep; the lowest-scoring groups are pruned.

Each criterion is its own config option of the `pruner/criterion` group (`conf/pruner/criterion/<name>.yaml`,
`_partial_: true`): the pruner calls it once per pruning group, so every group keeps its own running scores, and a
criterion's constants (snip_momentum's `alpha`, `beta`) exist in the composed config only when it is chosen.

A criterion (the `Criterion` protocol) sees the selected weights as a list and keeps any running state itself.
Gradient-based criteria are fed in `observe` (after backward, before the optimizer step); `scores` raises if they
are asked for a score before any gradient was observed. `accumulates` criteria observe every step up to the last
mask update; the others only at the steps where masks are updated, which keeps their per-step cost at zero.
docs/extending.md walks through adding one.
"""

from __future__ import annotations

from typing import Protocol

import torch

from compress_sweeps.errors import ConfigError


class Criterion(Protocol):
    """What a pruner asks of a criterion."""

    name: str  # as in `pruner/criterion=<name>`, for messages
    needs_grad: bool  # scores need gradients: no mask update before the first optimizer step
    accumulates: bool  # observe every step (momentum), not only at mask updates

    def observe(self, weights: list[torch.Tensor], grads: list[torch.Tensor]) -> None: ...

    def scores(self, weights: list[torch.Tensor]) -> list[torch.Tensor]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict, weights: list[torch.Tensor]) -> None: ...


def check_first_update(criterion: Criterion, start_step: int | float, key: str, remedy: str = "") -> None:
    """A criterion that scores by gradients cannot update masks at step 0, before any gradient: a ConfigError on
    `key` (`pruner.start_step`) naming the criterion, with `remedy` (another way the pruner offers) if any."""
    if criterion.needs_grad and type(start_step) is int and start_step == 0:
        raise ConfigError(
            key,
            0,
            f"must be >= 1 (or a fraction of the run) with pruner/criterion={criterion.name}, which scores weights "
            f"by their gradients; step 0 is before any gradient ({remedy}or use pruner/criterion=magnitude)",
            problem="prunes before any gradient",
        )


def observed(state: list[torch.Tensor] | None, name: str) -> list[torch.Tensor]:
    """The running scores of a gradient-based criterion, or a clear error when no gradient was seen yet."""
    if state is None:
        raise RuntimeError(
            f"pruner/criterion={name} scores weights with their gradients, but pruning was asked before any gradient "
            "existed (a mask update at step 0?). Start pruning at step >= 1 (pruner.start_step) or use "
            "pruner/criterion=magnitude."
        )
    return state


def restored(state: dict, weights: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """Running scores from a checkpoint, each on its weight's device."""
    scores = state["scores"]
    return None if scores is None else [s.to(w.device) for s, w in zip(scores, weights, strict=True)]


class Magnitude:
    """|W|: small weights go first (no gradients needed)."""

    name = "magnitude"
    needs_grad = False
    accumulates = False

    def observe(self, weights: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        pass

    def scores(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        return [w.detach().abs() for w in weights]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, weights: list[torch.Tensor]) -> None:
        pass


class Gradient:
    """|G| of the latest optimizer step before the mask update."""

    name = "gradient"
    needs_grad = True
    accumulates = False

    def __init__(self) -> None:
        self.state: list[torch.Tensor] | None = None

    def observe(self, weights: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        self.state = [g.abs() for g in grads]

    def scores(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        return observed(self.state, self.name)

    def state_dict(self) -> dict:
        return {"scores": self.state}

    def load_state_dict(self, state: dict, weights: list[torch.Tensor]) -> None:
        self.state = restored(state, weights)


class Snip:
    """|W * G| (SNIP, Lee et al. 2019) of the latest optimizer step before the mask update."""

    name = "snip"
    needs_grad = True
    accumulates = False

    def __init__(self) -> None:
        self.state: list[torch.Tensor] | None = None

    def observe(self, weights: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        self.state = [(w.detach() * g).abs() for w, g in zip(weights, grads, strict=True)]

    def scores(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        return observed(self.state, self.name)

    def state_dict(self) -> dict:
        return {"scores": self.state}

    def load_state_dict(self, state: dict, weights: list[torch.Tensor]) -> None:
        self.state = restored(state, weights)


class SnipMomentum:
    """score <- beta * score + alpha * |W * G| every step (Intel Neural Compressor's default criterion)."""

    name = "snip_momentum"
    needs_grad = True
    accumulates = True

    def __init__(self, alpha: float = 1.0, beta: float = 0.9) -> None:
        if alpha <= 0:
            raise ConfigError("pruner.criterion.alpha", alpha, "must be > 0")
        if not 0.0 <= beta <= 1.0:
            raise ConfigError("pruner.criterion.beta", beta, "must be in [0, 1]")
        self.alpha, self.beta = alpha, beta
        self.state: list[torch.Tensor] | None = None

    @torch.no_grad()
    def observe(self, weights: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        if self.state is None:
            self.state = [torch.zeros_like(w) for w in weights]
        # in place, one layer at a time: a fresh buffer for all layers at once costs more (page faults on CPU)
        # than the arithmetic; this runs every step, so it is most of the pruner's per-step overhead
        for score, w, g in zip(self.state, weights, grads, strict=True):
            score.mul_(self.beta).add_((w * g).abs_(), alpha=self.alpha)

    def scores(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        return observed(self.state, self.name)

    def state_dict(self) -> dict:
        """The running scores (a checkpoint restores them: they carry across every step)."""
        return {"scores": self.state}

    def load_state_dict(self, state: dict, weights: list[torch.Tensor]) -> None:
        self.state = restored(state, weights)


class Movement:
    """score <- score - W * G every step (movement pruning, Sanh et al. 2020): keep weights moving away from 0."""

    name = "movement"
    needs_grad = True
    accumulates = True

    def __init__(self) -> None:
        self.state: list[torch.Tensor] | None = None

    @torch.no_grad()
    def observe(self, weights: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        if self.state is None:
            self.state = [torch.zeros_like(w) for w in weights]
        for score, w, g in zip(self.state, weights, grads, strict=True):
            score.addcmul_(w, g, value=-1.0)

    def scores(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        return observed(self.state, self.name)

    def state_dict(self) -> dict:
        return {"scores": self.state}

    def load_state_dict(self, state: dict, weights: list[torch.Tensor]) -> None:
        self.state = restored(state, weights)
