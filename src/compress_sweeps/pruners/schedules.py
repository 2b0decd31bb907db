"""When to prune and how much: oneshot or iterative schedules with a sparsity decay curve.

Steps are optimizer steps (gradient accumulation already counted by the trainer). `start_step`, `end_step` and
`update_frequency` are each either an absolute step (an int) or a fraction of the run's total steps (a float in
[0, 1]), so one config serves a 3-step smoke run and a 10,000-step run alike. A fraction f resolves to
`max(1, round(f * total_steps))`: fractions never land on step 0, which is before any gradient exists. An absolute
step 0 means "at attach, before training" (a oneshot magnitude prune of the pretrained weights).

Masks are updated at `start_step`, every `update_frequency` steps after it, and at `end_step`. With
progress p = (t - start_step) / (end_step - start_step) (p = 1 for oneshot, start_step == end_step) and final
target s_f, the target sparsity at a mask update t is
- `linear`: s_f * p
- `cos`:    s_f * (1 - cos(pi * p)) / 2                  (slow, fast, slow)
- `exp`:    1 - (1 - s_f) ** p                           (the density shrinks by the same factor each update)
- `cube`:   s_f * (1 - (1 - p) ** 3)                     (Zhu & Gupta 2017: fast first, gentle at the end)
"""

from __future__ import annotations

import math

DECAYS = ("linear", "cos", "exp", "cube")


def decayed_target(final: float, progress: float, decay: str) -> float:
    """Target sparsity at `progress` in [0, 1] on the way to `final` (formulas in the module docstring)."""
    p = min(max(progress, 0.0), 1.0)
    if decay in DECAYS and p == 1.0:
        return final  # exactly, whatever the formula's rounding
    if decay == "linear":
        return final * p
    if decay == "cos":
        return final * (1.0 - math.cos(math.pi * p)) / 2.0
    if decay == "exp":
        return 1.0 - (1.0 - final) ** p
    if decay == "cube":
        return final * (1.0 - (1.0 - p) ** 3)
    raise ValueError(f"pruner.sparsity_decay must be one of {list(DECAYS)}, got '{decay}'")


def _check_step(key: str, value: int | float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"pruner.{key}={value!r} must be an int step or a float fraction in [0, 1]")
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ValueError(f"pruner.{key}={value} as a fraction of the run must be in [0, 1] (or give an int step)")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"pruner.{key}={value} must be >= 0")


class Schedule:
    """Mask-update steps and the target sparsity at each, resolved against the run length by `resolve`."""

    def __init__(
        self,
        start_step: int | float = 0.1,
        end_step: int | float = 0.7,
        update_frequency: int | float = 0.05,
        sparsity_decay: str = "exp",
    ) -> None:
        for key, value in (("start_step", start_step), ("end_step", end_step), ("update_frequency", update_frequency)):
            _check_step(key, value)
        if update_frequency == 0:
            raise ValueError("pruner.update_frequency must be >= 1 step (or a fraction > 0)")
        decayed_target(0.5, 0.5, sparsity_decay)  # validates the name
        self.spec = (start_step, end_step, update_frequency)
        self.decay = sparsity_decay
        self.start = self.end = self.every = 0

    @staticmethod
    def _steps(value: int | float, total: int) -> int:
        return value if isinstance(value, int) else max(1, round(value * total))

    def resolve(self, total_steps: int) -> Schedule:
        """Turn fractions into steps of a run of `total_steps` optimizer steps; check the order."""
        start, end, every = (self._steps(v, total_steps) for v in self.spec)
        if not start <= end <= total_steps:
            raise ValueError(
                f"pruner.start_step={self.spec[0]} and pruner.end_step={self.spec[1]} resolve to steps {start} and "
                f"{end} of a {total_steps}-step run; need 0 <= start_step <= end_step <= {total_steps}"
            )
        self.start, self.end, self.every = start, end, max(1, every)
        return self

    @property
    def oneshot(self) -> bool:
        return self.start == self.end

    def prunes_at(self, step: int) -> bool:
        """True at the steps where masks are recomputed."""
        return self.start <= step <= self.end and ((step - self.start) % self.every == 0 or step == self.end)

    def active(self, step: int) -> bool:
        """Between the first and last mask update (gradients of pruned weights are masked then)."""
        return self.start <= step <= self.end

    def target(self, step: int, final: float) -> float:
        """Target sparsity of the mask update at `step`."""
        progress = 1.0 if self.oneshot else (step - self.start) / (self.end - self.start)
        return decayed_target(final, progress, self.decay)
