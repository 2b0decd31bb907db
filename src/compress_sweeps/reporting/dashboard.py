"""`compress-sweeps dashboard <sweep folder>`: a W&B report of the sweep's group, built with `wandb-workspaces`.

Its sections: the sweep's metric (accuracy; perplexity for a causal LM) against the measured latency ratio and the
measured size, and against sparsity, one run set per measured pattern, and against the KD temperature when the sweep
varies it; a parallel-coordinates panel
over the swept keys; the runs table with the verified figures and the per-layer W&B tables (`layers`: sparsity and
bits per weight, `structure`: kept heads, widths, channels and blocks); the sweep report's own plots (Pareto fronts
drawn) and summary table from the sweep-level run (reporting/wandb_runs.py). A plan sweep gets the same layout, its
`plan_pareto.png` among the plots.

Every panel is built over keys the runs logged, computed from the job folders by the W&B logger's own functions: a
panel over a key no run logged is an error naming the key, never an empty chart. The report's full definition is
written to `<sweep>/report/wandb_report.json`; with an API key (or `--publish`) it is saved to W&B and its URL
printed, without one the command says how to publish it once online.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import wandb_workspaces.reports.v2 as wr
from wandb_workspaces import expr

from compress_sweeps.loggers.wandb_logger import has_credentials, wandb_mode
from compress_sweeps.objectives import short
from compress_sweeps.reporting.plots import TEMPERATURE_KEYS
from compress_sweeps.reporting.report import load_jobs, metric_of, swept_keys, write_report
from compress_sweeps.reporting.wandb_runs import (
    SWEEP_JOB_TYPE,
    LoggedSweep,
    checked_sweep,
    log_sweep_run,
    sweep_run_keys,
    sync_command,
)
from compress_sweeps.run.artifacts import write_json_atomic

# the runs table: the verified, measured figures of results.json (those some run logged); the sweep's metric first
TABLE = ["status", "metrics.eval/f1_macro", "compression.sparsity", "compression.pattern",
         "compression.bits", "compression.sparse_size_bytes", "compression.latency_ratio", "compression.speedup",
         "verified.ok", "optimizer_steps"]  # fmt: skip
DEFINITION = "wandb_report.json"


class MissingKey(ValueError):
    """A panel over a key no run of the sweep logged: an error, never an empty chart."""

    def __init__(self, panel: str, section: str, key: str, group: str) -> None:
        self.panel, self.section, self.key = panel, section, key
        super().__init__(f"panel '{panel}' needs the {section} key '{key}', which no run of W&B group '{group}' logged")


def flat_config(accessor: str | None, metric: Any) -> str | None:
    """The accessor of a config key as the W&B logger logs it, flat (`pruner.target_sparsity` is one key):
    `config:pruner.target_sparsity.value`. The library assumes a nested dict (`config:pruner.value.target_sparsity`),
    which would name no key of these runs."""
    return f"config:{metric.name}.value" if isinstance(metric, wr.Config) else accessor


class FlatScatter(wr.ScatterPlot):
    """A scatter plot whose config axes name flat keys (`flat_config`)."""

    def _to_model(self) -> Any:
        model = super()._to_model()
        model.config.x_axis, model.config.y_axis = (
            flat_config(model.config.x_axis, self.x),
            flat_config(model.config.y_axis, self.y),
        )
        return model


class FlatColumn(wr.ParallelCoordinatesPlotColumn):
    """A parallel-coordinates column over a flat config key (`flat_config`)."""

    def _to_model(self) -> Any:
        model = super()._to_model()
        model.accessor = flat_config(model.accessor, self.metric)
        return model


class Dashboard:
    """The report of one sweep group; every key a panel names is checked against what the runs logged."""

    def __init__(self, sweep: LoggedSweep, sweep_run: dict[str, set[str]], entity: str, online: bool) -> None:
        # the jobs' keys by section (config, summary, table), then the sweep-level run's (sweep-run media, ...)
        self.sweep, self.keys = sweep, {**sweep.keys, **{f"sweep-run {s}": k for s, k in sweep_run.items()}}
        self.jobs, self.entity = load_jobs(sweep.sweep_dir), entity
        self.score = ("summary", f"metrics.{metric_of(self.jobs)}")  # the y of every chart: accuracy, perplexity
        self.name = short(metric_of(self.jobs)).capitalize()
        # runsets name their project only online: the library looks its id up on the server when it is named
        self.where = {"entity": entity, "project": sweep.project} if online else {}
        self.group = [expr.Metric("Group") == sweep.group]

    def has(self, section: str, key: str) -> bool:
        return key in self.keys.get(section, ())

    def need(self, panel: str, section: str, key: str) -> str:
        """`key`, when some run logged it in `section`; else MissingKey naming it."""
        if not self.has(section, key):
            raise MissingKey(panel, section, key, self.sweep.group)
        return key

    def metric(self, panel: str, section: str, key: str) -> wr.Config | wr.SummaryMetric:
        self.need(panel, section, key)
        return wr.Config(key) if section == "config" else wr.SummaryMetric(key)

    def config_key(self, panel: str, swept: str) -> str:
        """The config column of a swept override: the key itself, or `choice.<group>` for a config group choice
        (`pruner=a,b`, `+recipe=...`)."""
        for key in (swept, f"choice.{swept}"):
            if self.has("config", key):
                return key
        raise MissingKey(panel, "config", swept, self.sweep.group)

    def scatter(self, title: str, x: tuple[str, str], log_x: bool = False) -> FlatScatter:
        """The sweep's metric (y: accuracy, or an LM's perplexity) against `x` = (section, key), one point per run."""
        x_metric, y_metric = self.metric(title, *x), self.metric(title, *self.score)
        return FlatScatter(title=title, x=x_metric, y=y_metric, log_x=log_x or None, layout=wr.Layout(w=12, h=8))

    def jobs_runset(self, name: str = "jobs", *only: Any, columns: Sequence[str] = ()) -> wr.Runset:
        job_type = [expr.Metric("JobType").isin(self.sweep.job_types)]
        return wr.Runset(**self.where, name=name, filters=[*self.group, *job_type, *only], pinned_columns=list(columns))

    def grid(self, panels: list[Any], runsets: list[wr.Runset] | None = None) -> wr.PanelGrid:
        return wr.PanelGrid(runsets=runsets or [self.jobs_runset()], panels=panels)

    def sections(self) -> list[Any]:
        """The report's blocks, section by section; a section whose data no run logged is left out."""
        blocks: list[Any] = []
        # `recipe` is the report's legend column; a W&B key only when the sweep varies `+recipe`
        swept = [k for k in swept_keys(self.jobs) if k != "recipe" or self.has("config", "choice.recipe")]
        cost = [("latency ratio (measured, vs dense)", "compression.latency_ratio")]
        cost += [("size (bytes, measured)", "compression.sparse_size_bytes")]
        name = self.name
        panels = [
            self.scatter(f"{name} vs {label}", ("summary", key)) for label, key in cost if self.has("summary", key)
        ]
        if panels:  # latency is left out when no run timed itself (measure_latency=false)
            blocks += [wr.H2(f"{name} against measured cost"), self.grid(panels)]
        patterns = sorted({str(p) for p in self.jobs["pattern"].dropna()})
        if patterns:
            by_pattern = [self.jobs_runset(f"pattern {p}", expr.Summary("compression.pattern") == p) for p in patterns]
            sparsity = self.scatter(f"{name} vs sparsity, by pattern", ("summary", "compression.sparsity"))
            blocks += [wr.H2(f"{name} vs sparsity, by pattern"), self.grid([sparsity], by_pattern)]
        if temperature := next((k for k in TEMPERATURE_KEYS if k in swept), None):
            kd = self.scatter(f"{name} vs KD temperature", ("config", temperature), log_x=True)
            blocks += [wr.H2(f"{name} vs KD temperature"), self.grid([kd])]
        if swept:
            title = "Swept settings"
            columns = [FlatColumn(metric=wr.Config(self.config_key(title, k)), display_name=k) for k in swept]
            figures = [
                self.score,
                ("summary", "compression.latency_ratio"),
                ("summary", "compression.sparse_size_bytes"),
            ]
            columns += [FlatColumn(metric=self.metric(title, *f)) for f in figures if self.has(*f)]
            parallel = wr.ParallelCoordinatesPlot(title=title, columns=columns, layout=wr.Layout(w=24, h=9))
            blocks += [wr.H2(title), self.grid([parallel])]
        blocks += [wr.H2("Runs, per-layer sparsity and kept structure"), self.runs_grid(swept)]
        if (report := self.report_grid()) is not None:
            blocks += [wr.H2("The sweep report's figures (Pareto fronts drawn)"), report]
        return blocks

    def runs_grid(self, swept: Sequence[str]) -> wr.PanelGrid:
        """The runs table (run name, swept keys, the verified figures) over the per-layer W&B tables."""
        config = [f"config:{self.config_key('Runs', k)}.value" for k in swept]
        shown = [self.score[1], *TABLE]
        columns = ["run:displayName", *config, *(f"summary:{k}" for k in shown if self.has("summary", k))]
        tables = [t for t in ("layers", "structure") if self.has("table", t)]
        panels = [wr.WeavePanelSummaryTable(table_name=t, layout=wr.Layout(w=12, h=10)) for t in tables]
        return self.grid(panels, [self.jobs_runset("jobs", columns=columns)])

    def report_grid(self) -> wr.PanelGrid | None:
        """The sweep-level run's images (the report's plots, as many as the sweep's data supports) and tables (the
        report's summary, a plan's candidates); None when it logged neither."""
        media = sorted(self.keys.get("sweep-run media", ()))
        panels: list[Any] = []
        if media:
            panels.append(
                wr.MediaBrowser(title="report/", media_keys=media, num_columns=2, layout=wr.Layout(w=24, h=12))
            )
        tables = [t for t in ("report/summary", "report/plan") if self.has("sweep-run table", t)]
        panels += [wr.WeavePanelSummaryTable(table_name=t, layout=wr.Layout(w=24, h=10)) for t in tables]
        only = [expr.Metric("Group") == self.sweep.group, expr.Metric("JobType") == SWEEP_JOB_TYPE]
        return self.grid(panels, [wr.Runset(**self.where, name="sweep report", filters=only)]) if panels else None

    def report(self) -> wr.Report:
        intro = f"Sweep folder {self.sweep.sweep_dir} ({self.sweep.jobs} runs), made by `compress-sweeps dashboard`."
        return wr.Report(
            project=self.sweep.project,
            entity=self.entity,
            title=f"Sweep {self.sweep.group}",
            description=f"W&B group {self.sweep.group}: measured {self.name.lower()}, latency, size and sparsity of "
            "every run",
            blocks=[wr.P(intro), *self.sections()],
            width="fluid",
        )


def definition(report: wr.Report, sweep: LoggedSweep) -> dict[str, Any]:
    """The report as W&B stores it (the spec `Report.save` uploads), with where it goes and how to publish it."""
    return {
        "entity": report.entity,
        "project": report.project,
        "group": sweep.group,
        "title": report.title,
        "publish": f"compress-sweeps dashboard {sweep.sweep_dir} --publish",
        "report": report._to_model().model_dump(mode="json", by_alias=True, exclude_none=True),  # no public dump
    }


def dashboard_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="compress-sweeps dashboard", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder whose jobs logged to W&B (logger=wandb)")
    parser.add_argument("--publish", action="store_true", help="save the report to W&B (needs an API key)")
    args = parser.parse_args(argv)
    sweep_dir = args.sweep_dir
    try:
        sweep = checked_sweep(sweep_dir, args.publish)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    online = args.publish or (wandb_mode(sweep.mode) == "online" and has_credentials())
    out = write_report(sweep_dir)
    entity = sweep.entity or (_entity() if online else "")  # null: the API key's default entity, at publish
    try:  # every panel checked before anything is logged
        report = Dashboard(sweep, sweep_run_keys(out), entity, online).report()
    except MissingKey as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sweep_run = log_sweep_run(sweep, out, "online" if online else "offline")
    path = out / DEFINITION
    if not online:
        write_json_atomic(path, definition(report, sweep))
        print(f"W&B report definition of group '{sweep.group}' written to {path}")
        print(f"offline (no W&B API key): once online, upload the runs ({sync_command(sweep, sweep_run)})")
        print(f"and publish the report: compress-sweeps dashboard {sweep_dir} --publish")
        return 0
    try:  # the run sets' projects are looked up on the server, then the report saved there
        write_json_atomic(path, definition(report, sweep))
        report.save()
    except Exception as error:  # the server out of reach, a missing permission: one line
        print(f"error: W&B did not take the report of group '{sweep.group}' ({type(error).__name__}: {error})",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"W&B report definition of group '{sweep.group}' written to {path}; saved to W&B: {report.url}")
    return 0


def _entity() -> str:
    """The API key's default W&B entity (online only)."""
    import wandb

    return wandb.Api().default_entity
