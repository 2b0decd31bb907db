"""Importance scores: which weights matter. Higher score = keep; the lowest-scoring groups are pruned.

A criterion sees the selected weights as a list and keeps any running state itself. Gradient-based criteria are
fed in `observe` (after backward, before the optimizer step); `scores` raises if they are asked for a score before
any gradient was observed. `accumulates` criteria observe every step up to the last mask update; the others only
at the steps where masks are updated, which keeps their per-step cost at zero.
"""

from __future__ import annotations

import torch

from compress_sweeps.errors import ConfigError

CRITERIA = ("magnitude", "gradient", "snip", "snip_momentum", "movement")


class Magnitude:
    """|W|: small weights go first (no gradients needed)."""

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


class _FromGradients:
    """Shared bookkeeping of the gradient-based criteria: the scores so far, or None before any gradient."""

    name = ""
    needs_grad = True
    accumulates = False

    def __init__(self) -> None:
        self.state: list[torch.Tensor] | None = None

    def scores(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.state is None:
            raise RuntimeError(
                f"pruner.criterion='{self.name}' scores weights with their gradients, but pruning was asked before "
                "any gradient existed (a mask update at step 0?). Start pruning at step >= 1 (pruner.start_step) "
                "or use pruner.criterion=magnitude."
            )
        return self.state

    def state_dict(self) -> dict:
        """The running scores (a checkpoint restores them: momentum criteria carry them across every step)."""
        return {"scores": self.state}

    def load_state_dict(self, state: dict, weights: list[torch.Tensor]) -> None:
        scores = state["scores"]
        self.state = None if scores is None else [s.to(w.device) for s, w in zip(scores, weights, strict=True)]


class Gradient(_FromGradients):
    """|G| of the latest optimizer step before the mask update."""

    name = "gradient"

    def observe(self, weights: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        self.state = [g.abs() for g in grads]


class Snip(_FromGradients):
    """|W * G| (SNIP, Lee et al. 2019) of the latest optimizer step before the mask update."""

    name = "snip"

    def observe(self, weights: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        self.state = [(w.detach() * g).abs() for w, g in zip(weights, grads, strict=True)]


class SnipMomentum(_FromGradients):
    """score <- beta * score + alpha * |W * G| every step (Intel Neural Compressor's default criterion)."""

    name = "snip_momentum"
    accumulates = True

    def __init__(self, alpha: float = 1.0, beta: float = 0.9, key: str = "pruner.") -> None:
        super().__init__()
        if alpha <= 0:
            raise ConfigError(f"{key}alpha", alpha, "must be > 0")
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"{key}beta", beta, "must be in [0, 1]")
        self.alpha, self.beta = alpha, beta

    @torch.no_grad()
    def observe(self, weights: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        if self.state is None:
            self.state = [torch.zeros_like(w) for w in weights]
        # in place, one layer at a time: a fresh buffer for all layers at once costs more (page faults on CPU)
        # than the arithmetic; this runs every step, so it is most of the pruner's per-step overhead
        for score, w, g in zip(self.state, weights, grads, strict=True):
            score.mul_(self.beta).add_((w * g).abs_(), alpha=self.alpha)


class Movement(_FromGradients):
    """score <- score - W * G every step (movement pruning, Sanh et al. 2020): keep weights moving away from 0."""

    name = "movement"
    accumulates = True

    @torch.no_grad()
    def observe(self, weights: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        if self.state is None:
            self.state = [torch.zeros_like(w) for w in weights]
        for score, w, g in zip(self.state, weights, grads, strict=True):
            score.addcmul_(w, g, value=-1.0)


def make_criterion(name: str, alpha: float = 1.0, beta: float = 0.9, key: str = "pruner."):
    """The criterion object for `pruner.criterion` (alpha/beta only matter to snip_momentum)."""
    if name == "magnitude":
        return Magnitude()
    if name == "gradient":
        return Gradient()
    if name == "snip":
        return Snip()
    if name == "snip_momentum":
        return SnipMomentum(alpha, beta, key)
    if name == "movement":
        return Movement()
    raise ConfigError(f"{key}criterion", name, f"must be one of {list(CRITERIA)}", problem="is unknown")
