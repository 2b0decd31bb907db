"""What the jobs of a sweep logged to W&B, read back from their folders offline; and the sweep-level W&B run that
holds the sweep report's plots.

A job logged to W&B when its `.hydra/config.yaml` chose `logger=wandb` (and not `logger.mode=disabled`). What it
logged is recomputed from the files it left with the W&B logger's own functions (`run_config` from its config and
Hydra's choices, `run_summary` from results.json), so the dashboard checks its panels against the keys the runs hold
without asking the W&B server, which may be out of reach. The config is read as saved, interpolations unresolved:
the keys are the same.

The sweep-level run (one per sweep: named after the group, job type `sweep-report`, in the jobs' project and group)
holds the report's PNG plots as W&B images under `report/<plot>` and its summary table as `report/summary` (and a
plan's candidates as `report/plan`), so the W&B dashboard shows the same figures (Pareto fronts drawn) as
`<sweep>/report/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import yaml

from compress_sweeps.loggers.wandb_logger import (
    default_group,
    flatten,
    has_credentials,
    run_config,
    run_summary,
    wandb_mode,
)
from compress_sweeps.run.artifacts import RESULTS

SWEEP_JOB_TYPE = "sweep-report"
SECTIONS = ("config", "summary", "table")  # what a job logs: config columns, summary values, W&B tables


@dataclass
class LoggedSweep:
    """The W&B side of a sweep folder: where its jobs logged, and every key some job logged a (non-null) value for,
    by section (`config`, `summary`, `table`)."""

    sweep_dir: Path
    project: str
    entity: str | None
    group: str
    mode: str | None  # the jobs' `logger.mode` setting (null: online with an API key, else offline)
    job_types: list[str] = field(default_factory=list)
    jobs: int = 0
    keys: dict[str, set[str]] = field(default_factory=lambda: {section: set() for section in SECTIONS})


def _yaml(path: Path) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _wandb_logger(config: dict[str, Any]) -> dict[str, Any] | None:
    """The job's `logger` settings when it logged to W&B."""
    logger = config.get("logger") or {}
    if str(logger.get("_target_", "")).rsplit(".", 1)[-1] != "WandbLogger" or logger.get("mode") == "disabled":
        return None
    return logger


def logged_sweep(sweep_dir: Path) -> LoggedSweep | None:
    """The W&B side of a sweep folder (every `*/results.json` job), or None when none of its jobs logged to W&B.
    Jobs that logged to different projects, entities or groups are an error: one dashboard shows one group."""
    sweep_dir = Path(sweep_dir).absolute()
    found: LoggedSweep | None = None
    for path in sorted(sweep_dir.glob(f"*/{RESULTS}")):
        folder = path.parent
        config = _yaml(folder / ".hydra" / "config.yaml")
        if (logger := _wandb_logger(config)) is None:
            continue
        hydra = _yaml(folder / ".hydra" / "hydra.yaml").get("hydra") or {}
        group = logger.get("group") or default_group(hydra.get("mode") == "MULTIRUN", sweep_dir)
        where = (logger.get("project") or "compress_sweeps", logger.get("entity"), group)
        if found is None:
            found = LoggedSweep(sweep_dir, *where, mode=logger.get("mode"))
        elif where != (found.project, found.entity, found.group):
            raise ValueError(
                f"the jobs of {sweep_dir} logged to different W&B places (project, entity, group): "
                f"{(found.project, found.entity, found.group)} and {where}; one dashboard shows one group"
            )
        choices = (hydra.get("runtime") or {}).get("choices") or {}
        summary, tables = run_summary(json.loads(path.read_text()))
        found.keys["config"] |= {k for k, v in run_config(config, folder, choices).items() if v is not None}
        found.keys["summary"] |= {k for k, v in summary.items() if v is not None}
        found.keys["table"] |= set(tables)
        found.jobs += 1
        if (job_type := logger.get("job_type") or "train") not in found.job_types:
            found.job_types.append(job_type)
    return found


def sweep_run_id(sweep: LoggedSweep) -> str:
    """The sweep-level run's id: the group and a hash of the sweep folder, so a second `report` of the same sweep
    logs into the same run (resumed) instead of adding one, and two sweep folders of the same name do not meet."""
    digest = hashlib.sha256(str(sweep.sweep_dir).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '-', sweep.group)[:48]}-{digest}"


class SweepRun(NamedTuple):
    """What `log_sweep_run` logged: keys by section (`media`, `table`), the run's folder and its mode."""

    keys: dict[str, set[str]]
    folder: Path
    mode: str


def _tables(report_dir: Path) -> dict[str, pd.DataFrame]:
    """The report's tables for W&B: `report/summary` (summary.csv) and, in a plan's folder, `report/plan` (every
    candidate of plan.json: rung, runtime, KD, predicted and re-measured latency and size, prediction errors)."""
    tables = {}
    if (summary := Path(report_dir) / "summary.csv").is_file():
        tables["report/summary"] = pd.read_csv(summary)
    if (plan := Path(report_dir) / "plan.json").is_file():
        frame = pd.DataFrame([flatten(job) for job in json.loads(plan.read_text()).get("jobs", [])])
        tables["report/plan"] = frame.apply(lambda column: column.map(lambda v: str(v) if isinstance(v, list) else v))
    return tables


def sweep_run_keys(report_dir: Path) -> dict[str, set[str]]:
    """The keys `log_sweep_run` logs from `report_dir`, by section: `media` (`report/<plot>` of every PNG) and
    `table` (`_tables`)."""
    plots = {f"report/{plot.stem}" for plot in Path(report_dir).glob("*.png")}
    return {"media": plots, "table": set(_tables(report_dir))}


def log_sweep_run(sweep: LoggedSweep, report_dir: Path, mode: str) -> SweepRun:
    """Log the report's plots (`report/<name>`, every PNG in `report_dir`) and tables (`_tables`) on the
    sweep-level run, in `mode` (`online` | `offline`); the run is closed with the outcome and any error re-raised."""
    import wandb

    plots = sorted(Path(report_dir).glob("*.png"))
    run = wandb.init(
        project=sweep.project,
        entity=sweep.entity,
        group=sweep.group,
        name=sweep.group,
        id=sweep_run_id(sweep),
        resume="allow",
        job_type=SWEEP_JOB_TYPE,
        config={"sweep_dir": str(sweep.sweep_dir), "jobs": sweep.jobs},
        dir=os.environ.get("WANDB_DIR") or str(report_dir),
        mode=mode,
        reinit="finish_previous",
    )
    exit_code = 1
    try:
        if plots:
            run.log({f"report/{plot.stem}": wandb.Image(str(plot)) for plot in plots})
        for key, frame in _tables(report_dir).items():  # NaN: a blank cell, not "nan"
            run.summary[key] = wandb.Table(dataframe=frame.astype(object).where(frame.notna(), None))
        exit_code = 0
    finally:
        folder = Path(run.dir).parent
        run.finish(exit_code=exit_code)
    return SweepRun(sweep_run_keys(report_dir), folder, mode)


def log_report_plots(sweep_dir: Path, out: Path) -> None:
    """`compress-sweeps report`: when the sweep's jobs logged to W&B, the report's plots as images on the
    sweep-level run of their group, in the jobs' mode (offline without an API key)."""
    try:
        sweep = logged_sweep(sweep_dir)
    except ValueError as error:  # jobs in several groups: the report stands, nothing is logged
        print(f"W&B: plots not logged: {error}")
        return
    if sweep is None or (mode := wandb_mode(sweep.mode)) == "disabled":
        return
    run = log_sweep_run(sweep, out, mode)
    print(f"W&B ({mode}): {len(run.keys['media'])} plots logged on run '{sweep.group}' of group '{sweep.group}'")
    if mode == "offline":
        print(f"upload it once online: wandb sync {run.folder}")


def checked_sweep(sweep_dir: Path, publish: bool) -> LoggedSweep:
    """The W&B side of `sweep_dir`; a ValueError saying in one line why no dashboard can be made of it."""
    if not sweep_dir.is_dir() or not any(sweep_dir.glob(f"*/{RESULTS}")):
        raise ValueError(f"{sweep_dir} is not a sweep folder: no <job>/{RESULTS} in it")
    sweep = logged_sweep(sweep_dir)  # jobs logged to several groups: a ValueError
    if sweep is None:
        raise ValueError(f"no job of {sweep_dir} logged to W&B (logger=none or logger.mode=disabled)")
    if publish and not has_credentials():
        raise ValueError("--publish needs a W&B API key: run `wandb login` (or set WANDB_API_KEY) first")
    return sweep


def sync_command(sweep: LoggedSweep, sweep_run: SweepRun) -> str:
    """`wandb sync` of the sweep's offline runs: the sweep-level run's folder (where WANDB_DIR puts every run) and
    the jobs' own folders when they logged there."""
    folders = [f"{sweep_run.folder.parent}/offline-run-*"]
    jobs = [path.parent for path in sweep.sweep_dir.glob(f"*/{RESULTS}")]
    if any(any((job / "wandb").glob("offline-run-*")) for job in jobs):
        folders.append(f"{sweep.sweep_dir}/*/wandb/offline-run-*")
    return "wandb sync " + " ".join(folders)
