"""The plan's jobs: what one launched run is (`Job`: its rung, overrides, results and figures, and how the plan ranks
it) and the overrides that make a candidate (`Candidates`): the dense run as its starting model, the slim cut at
attach, the runtime's export, the KD option and the rung's training length."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress_sweeps.objectives import goal
from compress_sweeps.planner.measure import UNTIMED
from compress_sweeps.planner.runtimes import RUNTIMES, score_of
from compress_sweeps.planner.screen import Shape
from compress_sweeps.planner.settings import PlanSettings
from compress_sweeps.sweeps.sweeper import touches

REPLACED = ("model", "pruner", "quantizer", "export", "distiller")  # groups a candidate sets itself
PREFIX = {1: "screen-", 2: "final-", 3: "recut-"}  # a candidate's folder name, by rung


def quoted(value: str) -> str:
    """A value as a quoted Hydra override string (run folder names hold '=' and ',')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def replaced(overrides: Sequence[str], extra: Sequence[str]) -> list[str]:
    """`overrides` without those of the keys `extra` sets, then `extra`."""
    keys = {e.split("=", 1)[0].lstrip("+~") for e in extra}
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in keys] + list(extra)


def folder_named(name: str) -> str:
    """The override that names a candidate's folder after it (`final-heads+ffn-0.75-int8_dynamic-kd-logits-<job id>`)
    instead of after its overrides, whose first 80 characters are the dense run's path."""
    return "hydra.sweep.subdir=${cs_job_dir:" + re.sub(r"[^A-Za-z0-9.+_-]+", "-", name) + "}"


@dataclass
class Job:
    """One launched run of the plan: the dense job (rung 0), a screened candidate (1), a finalist (2) or a finalist
    re-cut after re-timing (3)."""

    rung: int  # 0 dense, 1 screened, 2 finalist, 3 a finalist re-cut after re-timing (Planner._recut)
    name: str
    runtime: str
    overrides: list[str]
    metric: str  # the task's headline metric (eval/accuracy, eval/perplexity)
    folder: Path | None = None
    kd: str = "none"
    shape: Shape | None = field(default=None, repr=False)
    results: dict = field(default_factory=dict)
    predicted: dict = field(default_factory=dict)  # the cost table's, on the shape the run delivered
    measured: dict = field(default_factory=dict)  # re-timed end to end after training, and the file's size
    timed_before: dict | None = None  # the guard's whole-model timing of the shape, before training

    @property
    def completed(self) -> bool:
        return self.results.get("status") == "completed"

    @property
    def score(self) -> float | None:
        """The run's headline metric in its runtime (the int8 model's for an int8 runtime)."""
        return score_of(self.results, RUNTIMES[self.runtime], self.metric) if self.completed else None

    @property
    def merit(self) -> float:
        """The score signed so that higher is better (-inf without a score): what the plan ranks by."""
        if self.score is None:
            return -math.inf
        return self.score if goal(self.metric) == "maximize" else -self.score

    @property
    def num_labels(self) -> int | None:
        from compress_sweeps.models.runs import saved_num_labels

        return saved_num_labels(str(self.folder))


@dataclass
class Candidates:
    """Makes the plan's candidate jobs from the user's overrides (`base`, without `plan.*` and `sweep`)."""

    settings: PlanSettings
    base: list[str]
    trainer: str  # the trainer group the user's run composed (the candidates train as it does)
    metric: str

    def pruner_overrides(self, units: Sequence[str], target: float) -> list[str]:
        """What makes a run cut `units` at `target` at attach (no units: no slimming)."""
        if not units:
            return ["pruner=none"]
        return [
            "pruner=slim",
            f"pruner.target={target}",
            f"pruner.units=[{','.join(units)}]",
            "pruner.start_step=0",
            "pruner.end_step=0",
            f"pruner.calibration_batches={self.settings.calibration_batches}",
            f"pruner.round_to={self.settings.round_to}",
        ]

    def start(self, dense: Job) -> list[str]:
        """The base overrides of every candidate: the dense run as starting model, the dense run's trainer."""
        base = [o for o in self.base if not any(touches(o, g) for g in REPLACED)]
        start = ["model=from_run", f"model.folder={quoted(str(dense.folder.absolute()))}"]
        if not any(touches(o, "trainer") and "=" in o and "." not in o.split("=")[0] for o in base):
            start.append(f"trainer={self.trainer}")
        return replaced(base, start)

    def job(self, dense: Job, shape: Shape, runtime: str, rung: int, kd: str, guard: Sequence[dict[str, Any]]) -> Job:
        """Candidate `shape` served in `runtime`, at `rung` (1: `screen_steps` steps; 2 and 3: the run's length),
        with KD option `kd`; `guard`: the whole-model timings before training (its own, if among them)."""
        steps = []
        if rung == 1:
            dense_steps = int(dense.results.get("optimizer_steps") or 0)
            screen_steps = self.settings.screen_steps
            count = screen_steps if isinstance(screen_steps, int) else max(1, round(screen_steps * dense_steps))
            steps = [f"trainer.max_steps={count}", "trainer.epochs=null"]
        folder = quoted(str(dense.folder.absolute()))
        extra = [
            *self.pruner_overrides(shape.units, shape.target),
            *RUNTIMES[runtime].overrides,
            *(o.replace("{dense}", folder) for o in self.settings.kd[kd]),
            *steps,
            "trainer.eval_every=null",
            UNTIMED,
        ]
        name = f"{shape.label}/{runtime}" + (f"/kd={kd}" if rung >= 2 else "")
        extra.append(folder_named(PREFIX[rung] + name))
        timed = next((g["timed"] for g in guard if (g["shape"], g["runtime"]) == (shape.label, runtime)), None)
        overrides = replaced(self.start(dense), extra)
        return Job(rung, name, runtime, overrides, self.metric, kd=kd, shape=shape, timed_before=timed)
