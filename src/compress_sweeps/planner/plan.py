"""The planner: the best-scoring model that meets a latency / size budget on this machine, as a sweep.

The score is the task's headline metric (`objectives.objective_of`: eval/accuracy of a classification task, higher
is better; eval/perplexity of a causal LM, lower is better), compared the way `objectives.goal` says.

Order of work (every job is an ordinary run in the sweep folder, launched by the sweep's launcher):

1. Check the budget and the search (settings.py), build or load the cost table of this machine and model
   (table.py) and predict the fastest model the search can build, from the untrained dense model: a budget nothing
   can meet stops here (exit 2), before anything trains.
2. The dense job: the user's run as it is (the reference score, the starting point and the KD teacher).
3. Screening without training (screen.py): every unit set at every target, cut in one shot out of the trained dense
   model by the slim pruner the candidates will run (one calibration per unit set), predicted in every runtime; per
   (unit set, runtime) the smallest target within the budget less the margin. Each such shape is then timed whole,
   in its runtime, against the dense model (measure.py): a shape the table under-predicted is moved to the next
   target before anything trains.
4. Rung 1: each candidate trained `screen_steps` steps, without KD, exported to its runtime.
5. Rung 2: the `finalists` best-scoring candidates of rung 1, each with every KD option, at the run's full length.
6. Every finished candidate is re-timed end to end against the dense model and its delivered file measured; the
   best-scoring model that meets the budget is the answer (report.py writes report/plan.md and plan.json). When
   no finalist does, the best-scoring one is cut once more, deeper by what it missed (`_recut`), and trained at full
   length before the answer.

A candidate starts from the dense run (`model=from_run`) and is cut at attach (`pruner.start_step=0
pruner.end_step=0`, gradients from `plan.calibration_batches` batches): its shape is known before it trains, and it
trains at the slim model's cost. Re-launching into the sweep folder skips every finished job (the jobs are the same).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.models import from_run, tokenizer_for
from compress_sweeps.objectives import goal, objective_of
from compress_sweeps.planner import measure, report
from compress_sweeps.planner.families import family_of
from compress_sweeps.planner.jobs import Candidates, Job, replaced
from compress_sweeps.planner.runtimes import RUNTIMES
from compress_sweeps.planner.screen import (
    Shape,
    deeper_within,
    guarded,
    load_decision,
    save_decision,
    screen,
    smallest_within,
)
from compress_sweeps.planner.settings import PlanSettings, plan_settings
from compress_sweeps.planner.table import cost_table
from compress_sweeps.reporting.report import write_report
from compress_sweeps.run.artifacts import RESULTS
from compress_sweeps.sweeps.precheck import job_config, job_folder, point_error
from compress_sweeps.sweeps.sweeper import touches

log = logging.getLogger(__name__)
DECISION = "plan_candidates.json"  # report/<it>: the candidates chosen (screen.save_decision)
GUARD_TRIES = 3  # targets tried per (units, runtime) when whole-model timing finds the predicted one over budget


@dataclass
class Data:
    """The run's task and its encoded splits (what screening calibrates on and the plan's inputs come from)."""

    task: Any
    train_set: Any
    eval_set: Any


class Planner:
    """Runs one plan: `launch(list of override lists) -> None` runs jobs (the sweep's launcher)."""

    def __init__(self, config: DictConfig, arguments: Sequence[str], launch: Callable[[list[list[str]]], Any]) -> None:
        self.config, self.launch = config, launch
        self.settings: PlanSettings = plan_settings(OmegaConf.to_container(config.plan, resolve=True))
        self.base = [a for a in arguments if not (touches(a, "plan") or touches(a, "sweep"))]
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.threads = self.settings.threads or torch.get_num_threads()
        self.laps: dict[str, float] = {}
        self.started = time.perf_counter()
        self.dense_runtimes: dict[str, Any] = {}  # the dense model in each int8 runtime, built at the table's refresh
        self.plan: dict[str, Any] = {"settings": OmegaConf.to_container(config.plan, resolve=True), "jobs": []}

    # --- the steps ------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        if (error := point_error(self.config, self.base)) is not None:
            raise ConfigError("sweep=plan", " ".join(self.base) or "(defaults)", f"must be a valid run: {error}")
        dense_cfg = job_config(self.config, self.base)
        self.metric = objective_of(dense_cfg.task).metrics[0]
        self.plan |= {"metric": self.metric, "goal": goal(self.metric)}
        self.candidates = Candidates(self.settings, self.base, self.config.hydra.runtime.choices.trainer, self.metric)
        data, dense = self._untrained(dense_cfg)
        keys = data.task.input_keys
        self.inputs = measure.plan_inputs(data.eval_set, keys, self.settings.batch_size, self.settings.seq_len)
        self.family = family_of(dense, self.inputs)
        with measure.torch_threads(self.threads):
            self.table, path, cached = cost_table(
                self.family, self.inputs, self.settings.runtimes, self.threads, dense_cfg.paths.cache_dir,
                self.settings.repeats, self.settings.trials, self.settings.round_to, self.dense_runtimes,
            )  # fmt: skip
        self._lap("cost_table_s")
        self.plan["table"] = {"file": str(path), "cached": cached, "measured_s": self.table.measured_s} | {
            k: getattr(self.table, k) for k in ("identity", "inputs", "factors", "dense_ms", "calibration")
        }
        self._check_reachable(dense_cfg, data, dense)
        self._lap("reachable_s")
        dense_job = Job(0, "dense", "fp32", list(self.base), self.metric)
        self._run([dense_job])
        self._lap("dense_s")
        if not dense_job.completed:
            raise RuntimeError(f"the dense run failed ({dense_job.folder}): {dense_job.results.get('error')}")
        self.dense_job = dense_job
        shapes, skipped = self._screen(dense_cfg, data)
        self._lap("screen_s")
        candidates = self._decided(shapes) or self._guarded(
            smallest_within(shapes, self.settings.runtimes, self.budget, self.settings.margin), shapes
        )
        save_decision(self.decision, self.plan["settings"], str(dense_job.folder), candidates, self.plan["guard"])
        self._lap("guard_s")
        rung1 = [self._candidate(shape, runtime, 1, "none") for (_, runtime), shape in candidates.items()]
        self._run(rung1)
        self._lap("rung1_s")
        ranked = sorted(
            (j for j in rung1 if j.completed),
            key=lambda j: (-j.merit, j.shape.predicted[j.runtime]["latency_ratio"]),
        )
        finalists = ranked[: self.settings.finalists]
        rung2 = [self._candidate(j.shape, j.runtime, 2, kd) for j in finalists for kd in self.settings.kd]
        self._run(rung2)
        self._lap("rung2_s")
        jobs = [dense_job, *rung1, *rung2]
        self._retime(jobs)
        self._lap("retime_s")
        recut = self._recut(rung2, shapes)
        if recut:
            self._run(recut)
            self._retime([dense_job, *recut], "factors_at_recut")
            jobs += recut
            self._lap("recut_s")
        self.plan |= {
            "budget": self.budget,
            "skipped_units": skipped,
            "screening": [s.row() for s in shapes],
            "candidates": {f"{'+'.join(u)}/{r}": s.target for (u, r), s in candidates.items()},
        }
        return self._finish(jobs)

    # --- helpers --------------------------------------------------------------------------------------------------

    @property
    def budget(self) -> dict[str, float]:
        return self.settings.budget

    def _lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.started - sum(self.laps.values())

    def _untrained(self, cfg: DictConfig) -> tuple[Data, torch.nn.Module]:
        """The task with its encoded splits, and the dense model as the config builds it (what the cost table times;
        trained weights time the same)."""
        task = instantiate(cfg.task)
        model = instantiate(cfg.model, num_labels=task.num_labels).eval()
        return Data(task, *task.datasets(tokenizer_for(model))), model

    def _context(self, cfg: DictConfig, data: Data) -> RunContext:
        return RunContext(
            total_steps=0,
            num_labels=data.task.num_labels,
            device=torch.device("cpu"),
            input_keys=data.task.input_keys,
            train_set=data.train_set,
            eval_set=data.eval_set,
            task_name=data.task.name,
            cache_dir=cfg.paths.cache_dir,
            objective=objective_of(cfg.task),
        )

    def _pruner_for(self, base: Sequence[str]) -> Callable[[Sequence[str]], Any]:
        """Builds the slim pruner a candidate of `units` runs (at the first target), composed as its job is."""

        def build(units: Sequence[str]) -> Any:
            point = replaced(base, self.candidates.pruner_overrides(units, self.settings.targets()[0]))
            return instantiate(job_config(self.config, point).pruner)

        return build

    def _check_reachable(self, cfg: DictConfig, data: Data, dense: torch.nn.Module) -> None:
        """Before anything trains: can the search build any model within the budget at all? (The most each unit
        set can remove does not depend on the weights.)"""
        deepest = [0.999]  # slimmed_at stops at the most the units can remove: the fastest shape of each unit set
        shapes, skipped = screen(
            dense, self._context(cfg, data), self._pruner_for(self.base), self.settings.units,
            deepest, self.family, self.table, self.settings.runtimes,
        )  # fmt: skip
        if not shapes:
            raise ConfigError(
                "plan.units", [list(u) for u in self.settings.units], f"cannot slim this model: {skipped}"
            )
        pairs = [(shape, runtime) for shape in shapes for runtime in self.settings.runtimes]
        shape, runtime = min(pairs, key=lambda p: measure.budget_used(p[0].predicted[p[1]], self.budget))
        figures = shape.predicted[runtime]
        if not measure.meets(figures, self.budget):
            key = max(self.budget, key=lambda k: measure.budget_used(figures, {k: self.budget[k]}))
            raise ConfigError(
                f"plan.{key}",
                self.budget[key],
                f"must be reachable: the fastest model the search builds here ({shape.label}, {runtime}) is predicted "
                f"at {figures['latency_ratio']:.3f} of the dense latency, {figures['latency_ms']:.1f} ms, "
                f"{figures['size_mb']:.1f} MB",
                problem="cannot be met",
            )

    def _screen(self, cfg: DictConfig, data: Data) -> tuple[list[Shape], dict[str, str]]:
        """Screening on the trained dense model (module docstring, step 3)."""
        dense = from_run(str(self.dense_job.folder), data.task.num_labels).eval()
        self.dense_model = dense
        pruner_for = self._pruner_for(self.candidates.start(self.dense_job))
        return screen(
            dense, self._context(cfg, data), pruner_for, self.settings.units,
            self.settings.targets(), self.family, self.table, self.settings.runtimes,
            enough=self._within, beyond=GUARD_TRIES,
        )  # fmt: skip

    def _within(self, shape: Shape) -> bool:
        """Whether every runtime's prediction of `shape` is within the budget less the margin."""
        return all(measure.meets(f, self.budget, self.settings.margin) for f in shape.predicted.values())

    def _guarded(self, chosen: dict, shapes: Sequence[Shape]) -> dict:
        """The chosen shapes timed whole before training, over-budget ones replaced (screen.guarded)."""

        def timed(models: dict[str, tuple[torch.nn.Module, str]]) -> dict[str, dict[str, float]]:
            with measure.torch_threads(self.threads):  # a check, not the figure: one set
                return measure.shape_timings(
                    self.dense_model, models, self.inputs, self.threads, self.settings.repeats, 1
                )

        kept, self.plan["guard"] = guarded(chosen, shapes, timed, self.budget, GUARD_TRIES)
        return kept

    def _recut(self, finalists: Sequence[Job], shapes: Sequence[Shape]) -> list[Job]:
        """When re-timing finds every finalist over the budget (the machine drifted since screening: on a shared
        2-core VM, ONNX Runtime int8 over PyTorch fp32 moved from 0.35 to 0.40 between the two, or the table erred
        on the shape), the best-scoring finalist once more, cut deeper (screen.deeper_within), trained at full
        length with the same KD option (rung 3, re-timed against the dense model in a set of its own)."""
        done = [j for j in finalists if j.completed and j.measured]
        if not done or any(measure.meets(j.measured, self.budget) for j in done):
            return []
        best = max(done, key=lambda j: j.merit)
        shape = deeper_within(best.shape, best.runtime, best.measured, shapes, self.budget, self.settings.margin)
        if shape is None:
            log.info("plan: every finalist re-timed over budget; no screened cut of %s deeper is within it", best.name)
            return []
        log.info("plan: every finalist re-timed over budget; %s cut deeper, to %g", best.name, shape.target)
        return [self._candidate(shape, best.runtime, 3, best.kd)]

    @property
    def decision(self) -> Path:
        """Where the candidates a launch chose are kept (report/plan_candidates.json)."""
        return self.sweep_dir / "report" / DECISION

    def _decided(self, shapes: Sequence[Shape]) -> dict | None:
        """The candidates an earlier launch of this plan into the sweep folder chose (screen.load_decision)."""
        if (saved := load_decision(self.decision, self.plan["settings"], str(self.dense_job.folder), shapes)) is None:
            return None
        chosen, self.plan["guard"] = saved
        log.info("plan: the candidates of the earlier launch into %s", self.sweep_dir)
        return chosen

    def _candidate(self, shape: Shape, runtime: str, rung: int, kd: str) -> Job:
        return self.candidates.job(self.dense_job, shape, runtime, rung, kd, self.plan.get("guard", []))

    def _run(self, jobs: Sequence[Job]) -> None:
        """Launch `jobs` (finished ones skip themselves) and read their results; a failed job stays recorded."""
        if not jobs:
            return
        for job in jobs:
            job.folder = job_folder(self.config, job.overrides)
        self.launch([job.overrides for job in jobs])
        for job in jobs:
            try:
                job.results = json.loads((job.folder / RESULTS).read_text())
            except (OSError, ValueError):
                job.results = {"status": "missing", "error": "no results.json (the job did not start or was killed)"}

    def _retime(self, jobs: Sequence[Job], factors_key: str = "factors_at_retime") -> None:
        """Every finished candidate's delivered model, re-timed end to end against the dense model in one
        interleaved set, its file measured, and the table's prediction for the shape it delivered. The dense model
        of every runtime is timed in the same set: the runtimes' factors now, so `predicted` is the table's error
        alone, and `screened_prediction` (factors taken at screening) adds what the machine drifted since."""
        models, done = {}, [j for j in jobs if j.completed and j.rung > 0]
        for job in done:
            models[job.name] = RUNTIMES[job.runtime].load(job.folder, job.num_labels, self.threads)
        int8 = [r for r in self.settings.runtimes if RUNTIMES[r].int8]
        with tempfile.TemporaryDirectory() as tmp, measure.torch_threads(self.threads):
            for runtime in int8:  # the table refresh's build (the same graph: weights do not change its time)
                path = Path(tmp) / f"dense-{runtime}.onnx"
                models[f"dense@{runtime}"] = self.dense_runtimes.get(runtime) or RUNTIMES[runtime].build(
                    self.dense_model, self.inputs, path, self.threads
                )
            timed = measure.timed_against_dense(
                self.dense_model, models, self.inputs, self.settings.repeats, self.settings.trials
            )
        factors = {"fp32": 1.0} | {r: timed[f"dense@{r}"]["latency_ratio"] for r in int8}
        self.plan[factors_key] = factors
        for job in done:
            saved = from_run(str(job.folder), job.num_labels)
            relative = self.table.predict(self.family, self.family.terms(saved), job.runtime)["latency_ratio"]
            ratio = relative / self.table.factors[job.runtime] * factors[job.runtime]
            job.predicted = {
                "latency_ratio": ratio,
                "latency_ms": ratio * timed["dense"]["latency_ms"],
                "size_mb": measure.predicted_mb(saved, job.runtime),
            }
            job.measured = timed[job.name] | {"size_mb": measure.file_mb(job.folder, job.runtime)}
        if not self.dense_job.measured:  # a re-cut's set keeps the dense figures of the first
            self.dense_job.measured = timed["dense"] | {"size_mb": measure.file_mb(self.dense_job.folder, "fp32")}
            self.dense_job.predicted = {"latency_ratio": 1.0, "latency_ms": self.table.dense_ms}

    def _finish(self, jobs: Sequence[Job]) -> dict[str, Any]:
        within = [j for j in jobs if j.rung > 0 and j.completed and measure.meets(j.measured, self.budget)]
        final = [j for j in within if j.rung >= 2] or within
        chosen = max(final, key=lambda j: (j.merit, -j.measured["latency_ratio"]), default=None)
        self._lap("plan_s")
        self.plan |= {
            "dense": report.job_row(self.dense_job),
            "jobs": [report.job_row(j) for j in jobs],
            "chosen": report.chosen_row(chosen, self.dense_job, self.base) if chosen else None,
            "fastest_measured": report.job_row(
                min(
                    (j for j in jobs if j.measured and j.rung > 0),
                    key=lambda j: j.measured["latency_ratio"],
                    default=self.dense_job,
                )
            ),
            "wall_s": self.laps | {"total_s": time.perf_counter() - self.started},
        }
        write_report(self.sweep_dir)  # the sweep's usual table and plots, beside plan.md
        report.write(self.plan, self.sweep_dir / "report")
        return self.plan
