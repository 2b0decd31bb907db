"""`compress-sweeps report <sweep folder>`: a results table (CSV + Markdown) and plots from every job's results.json.

Works offline, from the files alone: no W&B needed. The swept values come from each job's `.hydra/overrides.yaml`.
When the sweep's jobs logged to W&B, the command also logs the plots as W&B images on one sweep-level run of their
group (reporting/wandb_runs.py; offline without an API key), so the W&B dashboard shows the same figures.

Damage recovered: a run of 0 optimizer steps (results.json `optimizer_steps`, e.g. one-shot pruning) that is
compressed is a *one-shot* row; a compressed run that trained is a *trained* row. When the sweep holds the dense
run, one-shot rows and trained rows of the same compression target (task, model, measured pattern and sparsity),
each trained row shows the one-shot score it is compared with (the one-shot row of the same pruner, else the
best one-shot row of the target) and the share of the one-shot drop that training (and KD) recovered:
(trained - one_shot) / (dense - one_shot).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd
import yaml

from compress_sweeps.objectives import goal, headline, short
from compress_sweeps.reporting.plots import plot_all
from compress_sweeps.reporting.wandb_runs import log_report_plots
from compress_sweeps.run.artifacts import RESULTS
from compress_sweeps.run.identity import identity_free

COMPRESSORS = ("pruner", "quantizer", "distiller")
CHOICES = ("task", "model", *COMPRESSORS)
NUMBERS = ["score", "f1_macro", "sparsity", "bits", "size_mb", "latency_ratio", "speedup"]
INT8 = ["int8_score", "int8_latency_ratio"]  # of the int8 export, when the run made one
ONE_SHOT = ["calibration_s", "prune_s"]  # a one-shot pruner's wall time: calibration passes, the pruning itself


def _value(text: str):
    """An override's value as typed (`0.5`, `100`), without Hydra's escapes (`2\\:4`); `2:4` stays a pattern, not
    YAML 1.1's base-60 number 124."""
    text = re.sub(r"\\(.)", r"\1", text)
    if re.fullmatch(r"\d+:\d+", text):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


UNFINISHED = f"no {RESULTS}: the job was killed (out of memory, a time limit) or is still running"


def job_overrides(folder: Path) -> dict:
    """A job folder's command-line overrides ({key: value}, `+`/`~` dropped) from its `.hydra/overrides.yaml`."""
    overrides_file = Path(folder) / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    pairs = (override.lstrip("+~").partition("=") for override in overrides or [])
    return {key: _value(value) for key, _, value in pairs}


def load_jobs(sweep_dir: Path) -> pd.DataFrame:
    """One row per job folder: its overrides as columns, then status and the measured figures. A job folder Hydra
    made that holds no results.json (a run writes one even when it fails, so the process was killed: out of
    memory, a time limit; or it is still running) is a row of status `no results`, listed with the failed jobs."""
    rows = []
    folders = {path.parent for path in Path(sweep_dir).glob(f"*/{RESULTS}")}
    folders |= {path.parent.parent for path in Path(sweep_dir).glob("*/.hydra/overrides.yaml")}
    for folder in sorted(folders):
        path = folder / RESULTS
        results = json.loads(path.read_text()) if path.is_file() else {"status": "no results", "error": UNFINISHED}
        row = {"job": folder.name}
        for key, value in job_overrides(folder).items():
            if not identity_free(key):
                row[key] = value
        hydra_file = folder / ".hydra" / "hydra.yaml"
        choices = yaml.safe_load(hydra_file.read_text())["hydra"]["runtime"]["choices"] if hydra_file.is_file() else {}
        row |= {f"choice.{group}": choices.get(group) for group in CHOICES}
        row["recipe"] = recipe_of(row, job_overrides(folder))
        metrics, compression = results.get("metrics") or {}, results.get("compression") or {}
        size = compression.get("sparse_size_bytes", compression.get("size_bytes"))
        int8 = compression.get("int8_export") or {}
        metric = headline(metrics)
        row |= {
            "status": results.get("status"),
            "seed": results.get("seed"),
            "metric": metric if results.get("status") == "completed" else None,
            "score": metrics.get(metric),  # the headline metric: eval/accuracy, or eval/perplexity of an LM
            "f1_macro": metrics.get("eval/f1_macro"),
            "steps": results.get("optimizer_steps"),  # 0: compressed without training (one shot)
            "baseline_score": metrics.get(f"baseline/{short(metric)}"),
            "teacher_score": metrics.get(f"kd/teacher_{short(metric)}"),
            "sparsity": compression.get("sparsity"),
            "pattern": compression.get("pattern"),
            "bits": compression.get("bits"),
            "size_mb": size / 2**20 if size else None,
            "latency_ratio": compression.get("latency_ratio"),  # vs the dense model, timed beside it (batch 32)
            "speedup": compression.get("speedup"),
            "int8_score": int8.get(metric),  # the exported int8 model's (export=onnxruntime...)
            # vs the dense fp32 model where the export timed it (every run since slimming), else vs its own fp32
            "int8_latency_ratio": int8.get("latency_ratio_vs_dense", int8.get("latency_ratio")),
            "calibration_s": metrics.get("pruner/calibration_s"),
            "prune_s": metrics.get("pruner/prune_s"),
            "error": results.get("error"),
        }
        rows.append(row)
    unfinished = sum(row["status"] == "no results" for row in rows)
    if unfinished == len(rows):
        killed = f" ({unfinished} job folders hold none: killed, or still running)" if unfinished else ""
        raise FileNotFoundError(f"no */{RESULTS} under {sweep_dir}{killed}: is it a sweep folder?")
    jobs = pd.DataFrame(rows)
    measured = sorted(set(jobs["metric"].dropna()))
    if len(measured) > 1:
        raise ValueError(
            f"the jobs of {sweep_dir} score different metrics ({', '.join(measured)}): one task per report"
        )
    jobs.attrs["metric"] = measured[0] if measured else headline({})  # what `score` is; its goal orders the rows
    return with_student_reference(with_baseline(jobs))


def metric_of(frame: pd.DataFrame) -> str:
    """The metric a report frame's `score` columns hold (eval/accuracy unless the jobs said otherwise)."""
    return frame.attrs.get("metric", headline({}))


def named(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with `score` in its column names replaced by the metric's name (accuracy, perplexity)."""
    name = short(metric_of(frame))
    return frame.rename(columns={c: c.replace("score", name) for c in frame.columns if "score" in c})


def recipe_of(row: dict, overrides: dict) -> str:
    """What a job is, for the plots' legend: its `+recipe`, else its compression choices (`dense` for none)."""
    if "recipe" in overrides:
        return str(overrides["recipe"])
    parts = [
        f"{group}={row[f'choice.{group}']}" for group in COMPRESSORS if row.get(f"choice.{group}") not in (None, "none")
    ]
    return " ".join(parts) or "dense"


def with_baseline(jobs: pd.DataFrame) -> pd.DataFrame:
    """Fill `baseline_score` (when a run did not report one) with the mean score of the sweep's dense jobs — no
    pruner, quantizer or distiller — of the same task and model."""
    dense = (jobs["status"] == "completed") & jobs[[f"choice.{g}" for g in COMPRESSORS]].eq("none").all(axis=1)
    means = jobs[dense].groupby(["choice.task", "choice.model"], dropna=False)["score"].mean()
    for (task, model), score in means.items():
        same = (jobs["choice.task"] == task) & (jobs["choice.model"] == model) & jobs["baseline_score"].isna()
        jobs.loc[same, "baseline_score"] = score
    return jobs


def with_student_reference(jobs: pd.DataFrame) -> pd.DataFrame:
    """`student_score` of every distilled job: the mean score of the sweep's jobs with the same task, model, pruner
    and quantizer but no distiller (the student trained without KD), when the sweep holds them."""
    jobs["student_score"] = float("nan")
    done = jobs["status"] == "completed"
    same = ["choice.task", "choice.model", "choice.pruner", "choice.quantizer"]
    plain = jobs[done & (jobs["choice.distiller"] == "none")].groupby(same, dropna=False)["score"].mean()
    for key, score in plain.items():
        match = (jobs[same] == pd.Series(key, index=same)).all(axis=1) & (jobs["choice.distiller"] != "none")
        jobs.loc[match, "student_score"] = score
    return jobs


def swept_keys(jobs: pd.DataFrame) -> list[str]:
    """Override keys whose value differs between jobs (the seed is averaged over, not a column)."""
    fixed = {"job", "status", "seed", "error", "metric", "baseline_score", "teacher_score", "student_score", "steps"}
    fixed |= {*NUMBERS, *INT8, *ONE_SHOT, "pattern"}
    fixed |= {f"choice.{group}" for group in CHOICES}
    return [c for c in jobs.columns if c not in fixed and jobs[c].astype(str).nunique() > 1]


def summarize_jobs(jobs: pd.DataFrame) -> pd.DataFrame:
    """Completed jobs grouped by the swept values: mean and std of the score over seeds, means of the rest, and the
    relative loss of quality (%) against the dense baseline when one is known (positive: worse than dense, whichever
    way the metric goes: an accuracy drop, a perplexity increase). Columns carry the metric's name (`named`)."""
    done = jobs[jobs["status"] == "completed"].copy()
    keys = swept_keys(jobs)
    for key in keys:
        done[key] = done[key].astype(str)
    grouped = done.groupby(keys, dropna=False, sort=True) if keys else done.groupby(lambda _: "all")
    table = grouped.agg(
        score=("score", "mean"),
        score_std=("score", "std"),
        seeds=("seed", "nunique"),
        **{c: (c, "mean") for c in [*NUMBERS[1:], "baseline_score"]},
        **{c: (c, "mean") for c in ["teacher_score", "student_score", "steps", *INT8, *ONE_SHOT]},
        **{c: (c, "first") for c in ["pattern", *(f"choice.{g}" for g in ("task", "model", "pruner"))]},
    ).reset_index()
    table.attrs["metric"] = metric_of(jobs)
    if not keys:
        table = table.drop(columns=table.columns[0])
    table["score_std"] = table["score_std"].fillna(0.0)
    baseline, sign = table["baseline_score"], (1.0 if goal(metric_of(jobs)) == "maximize" else -1.0)
    table["drop_rel_pct"] = sign * (baseline - table["score"]) / baseline * 100.0
    # KD rows: the gap between the student without KD and the teacher, and the fraction of it the KD term closed
    gap = table["teacher_score"] - table["student_score"]
    table["kd_gap_closed_pct"] = (table["score"] - table["student_score"]) / gap.where(gap != 0) * 100.0
    kd_columns = ["teacher_score", "student_score", "kd_gap_closed_pct"]
    table = with_recovery(table)
    optional = [*kd_columns, "oneshot_score", "recovered_pct", "steps", *INT8, *ONE_SHOT, "f1_macro"]
    table = table.drop(columns=[c for c in optional if table[c].isna().all()])
    table = table.drop(columns=["baseline_score", "pattern", *(f"choice.{g}" for g in ("task", "model", "pruner"))])
    return named(table)


def target_of(row: pd.Series) -> tuple:
    """A row's compression target: task, model, measured pattern and sparsity (to 2 decimals)."""
    sparsity = row["sparsity"]
    return (row["choice.task"], row["choice.model"], str(row["pattern"]), round(float(sparsity), 2))


def with_recovery(table: pd.DataFrame) -> pd.DataFrame:
    """`oneshot_score` and `recovered_pct` of every trained, compressed row that has one-shot rows of its target
    (module docstring); NaN elsewhere."""
    table["oneshot_score"] = table["recovered_pct"] = float("nan")
    sign = 1.0 if goal(metric_of(table)) == "maximize" else -1.0  # quality: higher is better
    compressed = table["sparsity"].fillna(0) > 0
    oneshot = table[compressed & (table["steps"] == 0)]
    for index, row in table[compressed & (table["steps"] > 0)].iterrows():
        same = oneshot[[target_of(r) == target_of(row) for _, r in oneshot.iterrows()]]
        if same.empty:
            continue
        own = same[same["choice.pruner"] == row["choice.pruner"]]
        reference = own.iloc[0] if len(own) else same.loc[(sign * same["score"]).idxmax()]
        drop = sign * (row["baseline_score"] - reference["score"])
        table.loc[index, "oneshot_score"] = reference["score"]
        if not pd.isna(drop) and drop > 0:  # a one-shot row at or better than dense lost nothing to recover
            table.loc[index, "recovered_pct"] = sign * (row["score"] - reference["score"]) / drop * 100.0
    return table


def to_markdown(table: pd.DataFrame, failed: pd.DataFrame) -> str:
    """A Markdown table (no extra dependency): the score as mean ± std, sizes in MB, blanks for unknowns."""
    name = short(metric_of(table))

    def cell(column: str, value, row) -> str:
        if pd.isna(value) if not isinstance(value, list | dict) else False:
            return ""
        if column == name:
            return f"{value:.4f} ± {row[f'{name}_std']:.4f}"
        if isinstance(value, float):
            value += 0.0  # -0.0 (a dense row's change) prints as 0
            return f"{value:.4g}" if column != "sparsity" else f"{value:.3f}"
        return str(value)

    columns = [c for c in table.columns if c != f"{name}_std"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(c, row[c], row) for c in columns) + " |")
    if len(failed):
        lines += ["", f"Failed jobs ({len(failed)}):", ""]
        lines += [f"- `{job}`: {error}" for job, error in zip(failed["job"], failed["error"], strict=True)]
    return "\n".join(lines) + "\n"


def write_report(sweep_dir: Path, out_dir: Path | None = None) -> Path:
    """Write jobs.csv, summary.csv, summary.md and the plots into `out_dir` (default `<sweep>/report`)."""
    out_dir = Path(out_dir or Path(sweep_dir) / "report")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = load_jobs(sweep_dir)
    named(jobs).to_csv(out_dir / "jobs.csv", index=False)
    table = summarize_jobs(jobs)
    table.to_csv(out_dir / "summary.csv", index=False)
    failed = jobs[jobs["status"] != "completed"]
    (out_dir / "summary.md").write_text(to_markdown(table, failed))
    plot_all(jobs[jobs["status"] == "completed"], out_dir, swept_keys(jobs), metric_of(jobs))
    return out_dir


def report_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="compress-sweeps report", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder (outputs/sweeps/<date>_<time>)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: <sweep_dir>/report)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"no such folder: {args.sweep_dir}")
    out = write_report(args.sweep_dir, args.out)
    print((out / "summary.md").read_text())
    print(f"report written to {out}: " + ", ".join(sorted(p.name for p in out.iterdir() if p.is_file())))
    log_report_plots(args.sweep_dir, out)
    return 0
