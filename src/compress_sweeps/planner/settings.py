"""The `plan` node of `sweep=plan` (sweeps/plan.yaml): the budget and the search, checked before anything loads.

`PlanSettings`'s annotated signature is the schema (schema.py), so a negative budget, a latency ratio above 1, a
value that is not a number, `inf` or `nan`, or a key that is not a setting stops the sweep with one line naming the
key and exit code 2; the planner's own cross-checks (no budget at all, an unknown runtime or KD option) raise the
same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal

from pydantic import Field

from compress_sweeps.errors import ConfigError
from compress_sweeps.schema import check_arguments

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Ratio = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1)]
Unit = Literal["heads", "ffn", "blocks", "channels"]
BUDGETS = ("latency", "latency_ms", "size_mb")


@dataclass(frozen=True)
class PlanSettings:
    """What `plan.*` may say. Budgets (any combination, at least one): `latency` (a ratio of the dense fp32 model's
    latency, timed beside it), `latency_ms` (milliseconds on this machine at `batch_size` x `seq_len`), `size_mb`
    (the delivered model file). The search: `units` (slimming unit sets; sets the model cannot slim are skipped),
    `runtimes`, `kd` ({name: overrides}, `{dense}` standing for the dense run's folder), slim `targets` from
    `target_min` to `target_max` in steps of `target_step`, `screen_steps` training steps for every candidate
    (int, or a fraction of the run's steps), then the `finalists` best with every KD option at the run's full
    length. A candidate goes to training when its predicted latency and size are within the budget less `margin`.
    """

    latency: Ratio | None = None
    latency_ms: Positive | None = None
    size_mb: Positive | None = None
    batch_size: Count = 32
    seq_len: Count | None = None
    threads: Count | None = None
    runtimes: Annotated[Sequence[Literal["fp32", "int8_dynamic", "int8_static"]], Field(min_length=1)] = (
        "fp32",
        "int8_dynamic",
        "int8_static",
    )
    units: Annotated[Sequence[Annotated[Sequence[Unit], Field(min_length=1)]], Field(min_length=1)] = (
        ("heads", "ffn"),
        ("heads", "ffn", "blocks"),
        ("channels",),
    )
    kd: Annotated[Mapping[str, Sequence[str]], Field(min_length=1)] = field(
        default_factory=lambda: {"none": ["distiller=none"]}
    )
    target_min: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.05
    target_max: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.95
    target_step: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.025
    screen_steps: Annotated[int, Field(ge=0)] | Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.25
    finalists: Count = 2
    margin: Fraction = 0.03
    calibration_batches: Count = 8
    round_to: Count = 16
    repeats: Count = 6
    trials: Count = 3

    @property
    def budget(self) -> dict[str, float]:
        return {key: getattr(self, key) for key in BUDGETS if getattr(self, key) is not None}

    def targets(self) -> list[float]:
        """The slim targets screened, from `target_min` to `target_max`."""
        count = int(round((self.target_max - self.target_min) / self.target_step)) + 1
        return [round(self.target_min + i * self.target_step, 6) for i in range(max(count, 1))]


def plan_settings(values: Mapping[str, Any]) -> PlanSettings:
    """The `plan` node checked against `PlanSettings` (one ConfigError naming the first bad key)."""
    values = dict(values)
    check_arguments(PlanSettings, values, "plan.")
    settings = PlanSettings(**values)
    if not settings.budget:
        budgets = ", ".join(f"plan.{b}" for b in BUDGETS)
        allowed = f"must be set, or another budget: one or more of {budgets}"
        raise ConfigError("plan.latency", None, allowed, problem="leaves the plan without a budget")
    if settings.target_min > settings.target_max:
        raise ConfigError("plan.target_min", settings.target_min, f"must be <= plan.target_max={settings.target_max}")
    for name, overrides in settings.kd.items():
        if not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ConfigError(f"plan.kd.{name}", list(overrides), "must be a list of key=value overrides")
    return settings


def setting_names() -> list[str]:
    return [f.name for f in fields(PlanSettings)]
