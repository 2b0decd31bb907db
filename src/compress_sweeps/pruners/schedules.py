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

from compress_sweeps.errors import ConfigError

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
    raise ConfigError("pruner.sparsity_decay", decay, f"must be one of {list(DECAYS)}", problem="is unknown")


STEP = "an int step >= 0 or a float fraction of the run in [0, 1]"


def _check_step(key: str, value: int | float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, value, f"must be {STEP}", problem="is not a step")
    if (isinstance(value, float) and not 0.0 <= value <= 1.0) or (isinstance(value, int) and value < 0):
        raise ConfigError(key, value, f"must be {STEP}")


class Schedule:
    """Mask-update steps and the target sparsity at each, resolved against the run length by `resolve`."""

    def __init__(
        self,
        start_step: int | float = 0.1,
        end_step: int | float = 0.7,
        update_frequency: int | float = 0.05,
        sparsity_decay: str = "exp",
        key: str = "pruner.",
    ) -> None:
        steps = {"start_step": start_step, "end_step": end_step, "update_frequency": update_frequency}
        for name, value in steps.items():
            _check_step(f"{key}{name}", value)
        if update_frequency == 0:
            raise ConfigError(f"{key}update_frequency", update_frequency, "must be an int step >= 1 or a fraction > 0")
        if type(start_step) is type(end_step) and end_step < start_step:  # mixed int/fraction: checked in resolve
            raise ConfigError(f"{key}end_step", end_step, f"must be >= {key}start_step={start_step}")
        if sparsity_decay not in DECAYS:
            decayed_target(0.5, 0.5, sparsity_decay)  # raises, naming the allowed curves
        self.spec = (start_step, end_step, update_frequency)
        self.decay, self.key = sparsity_decay, key
        self.start = self.end = self.every = 0

    @staticmethod
    def _steps(value: int | float, total: int) -> int:
        return value if isinstance(value, int) else max(1, round(value * total))

    def resolve(self, total_steps: int, how: str = "") -> Schedule:
        """Turn fractions into steps of a run of `total_steps` optimizer steps; check the order.

        `how` says how the run's steps were counted (e.g. `trainer.max_steps=300`), for the error message.
        """
        start, end, every = (self._steps(v, total_steps) for v in self.spec)
        run = f"the run's {total_steps} optimizer steps" + (f" ({how})" if how else "")
        if end > total_steps:
            untrained = (  # trainer.max_steps=0: nothing runs after attach
                "; without training steps (trainer=none) a schedule can only prune at attach (start_step=0, "
                "end_step=0), or use a one-shot pruner (pruner=oneshot_magnitude | wanda | sparsegpt)"
                if total_steps == 0
                else ""
            )
            raise ConfigError(
                f"{self.key}end_step",
                self.spec[1],
                f"must resolve to a step <= {total_steps}, {run}{untrained}",
                "is beyond the run",
            )
        if start > end:
            raise ConfigError(
                f"{self.key}end_step",
                self.spec[1],
                f"must resolve to a step >= {self.key}start_step={self.spec[0]} (steps {end} < {start} of {run})",
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
