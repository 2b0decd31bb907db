"""`compress-sweeps report <sweep folder>`: a results table (CSV + Markdown) and plots from every job's results.json.

Works offline, from the files alone: no W&B needed. The swept values come from each job's `.hydra/overrides.yaml`.
When the sweep's jobs logged to W&B, the command also logs the plots as W&B images on one sweep-level run of their
group (reporting/wandb_runs.py; offline without an API key), so the W&B dashboard shows the same figures.

Damage recovered: a run of 0 optimizer steps (results.json `optimizer_steps`, e.g. one-shot pruning) that is
compressed is a *one-shot* row; a compressed run that trained is a *trained* row. When the sweep holds the dense
run, one-shot rows and trained rows of the same compression target (task, model, measured pattern and sparsity),
each trained row shows the one-shot accuracy it is compared with (the one-shot row of the same pruner, else the
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

from compress_sweeps.reporting.plots import plot_all
from compress_sweeps.reporting.wandb_runs import log_report_plots
from compress_sweeps.run.artifacts import RESULTS
from compress_sweeps.run.identity import identity_free

COMPRESSORS = ("pruner", "quantizer", "distiller")
CHOICES = ("task", "model", *COMPRESSORS)
NUMBERS = ["accuracy", "f1_macro", "sparsity", "bits", "size_mb", "latency_ratio", "speedup"]
INT8 = ["int8_accuracy", "int8_latency_ratio"]  # of the int8 export, when the run made one


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


def job_overrides(folder: Path) -> dict:
    """A job folder's command-line overrides ({key: value}, `+`/`~` dropped) from its `.hydra/overrides.yaml`."""
    overrides_file = Path(folder) / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    pairs = (override.lstrip("+~").partition("=") for override in overrides or [])
    return {key: _value(value) for key, _, value in pairs}


def load_jobs(sweep_dir: Path) -> pd.DataFrame:
    """One row per job folder: its overrides as columns, then status and the measured figures."""
    rows = []
    for path in sorted(Path(sweep_dir).glob(f"*/{RESULTS}")):
        folder = path.parent
        results = json.loads(path.read_text())
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
        row |= {
            "status": results.get("status"),
            "seed": results.get("seed"),
            "accuracy": metrics.get("eval/accuracy"),
            "f1_macro": metrics.get("eval/f1_macro"),
            "steps": results.get("optimizer_steps"),  # 0: compressed without training (one shot)
            "baseline_accuracy": metrics.get("baseline/accuracy"),
            "teacher_accuracy": metrics.get("kd/teacher_accuracy"),
            "sparsity": compression.get("sparsity"),
            "pattern": compression.get("pattern"),
            "bits": compression.get("bits"),
            "size_mb": size / 2**20 if size else None,
            "latency_ratio": compression.get("latency_ratio"),  # vs the dense model, timed beside it (batch 32)
            "speedup": compression.get("speedup"),
            "int8_accuracy": int8.get("eval/accuracy"),  # the exported int8 model's (export=onnxruntime...)
            # vs the dense fp32 model where the export timed it (every run since slimming), else vs its own fp32
            "int8_latency_ratio": int8.get("latency_ratio_vs_dense", int8.get("latency_ratio")),
            "error": results.get("error"),
        }
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no */{RESULTS} under {sweep_dir}: is it a sweep folder?")
    return with_student_reference(with_baseline(pd.DataFrame(rows)))


def recipe_of(row: dict, overrides: dict) -> str:
    """What a job is, for the plots' legend: its `+recipe`, else its compression choices (`dense` for none)."""
    if "recipe" in overrides:
        return str(overrides["recipe"])
    parts = [
        f"{group}={row[f'choice.{group}']}" for group in COMPRESSORS if row.get(f"choice.{group}") not in (None, "none")
    ]
    return " ".join(parts) or "dense"


def with_baseline(jobs: pd.DataFrame) -> pd.DataFrame:
    """Fill `baseline_accuracy` (when a run did not report one) with the mean accuracy of the sweep's dense jobs —
    no pruner, quantizer or distiller — of the same task and model."""
    dense = (jobs["status"] == "completed") & jobs[[f"choice.{g}" for g in COMPRESSORS]].eq("none").all(axis=1)
    means = jobs[dense].groupby(["choice.task", "choice.model"], dropna=False)["accuracy"].mean()
    for (task, model), accuracy in means.items():
        same = (jobs["choice.task"] == task) & (jobs["choice.model"] == model) & jobs["baseline_accuracy"].isna()
        jobs.loc[same, "baseline_accuracy"] = accuracy
    return jobs


def with_student_reference(jobs: pd.DataFrame) -> pd.DataFrame:
    """`student_accuracy` of every distilled job: the mean accuracy of the sweep's jobs with the same task, model,
    pruner and quantizer but no distiller (the student trained without KD), when the sweep holds them."""
    jobs["student_accuracy"] = float("nan")
    done = jobs["status"] == "completed"
    same = ["choice.task", "choice.model", "choice.pruner", "choice.quantizer"]
    plain = jobs[done & (jobs["choice.distiller"] == "none")].groupby(same, dropna=False)["accuracy"].mean()
    for key, accuracy in plain.items():
        match = (jobs[same] == pd.Series(key, index=same)).all(axis=1) & (jobs["choice.distiller"] != "none")
        jobs.loc[match, "student_accuracy"] = accuracy
    return jobs


def swept_keys(jobs: pd.DataFrame) -> list[str]:
    """Override keys whose value differs between jobs (the seed is averaged over, not a column)."""
    fixed = {"job", "status", "seed", "error", "baseline_accuracy", "teacher_accuracy", "student_accuracy", "steps"}
    fixed |= {*NUMBERS, *INT8, "pattern"}
    fixed |= {f"choice.{group}" for group in CHOICES}
    return [c for c in jobs.columns if c not in fixed and jobs[c].astype(str).nunique() > 1]


def summarize_jobs(jobs: pd.DataFrame) -> pd.DataFrame:
    """Completed jobs grouped by the swept values: mean and std of accuracy over seeds, means of the rest, and the
    relative accuracy drop (%) against the dense baseline when one is known."""
    done = jobs[jobs["status"] == "completed"].copy()
    keys = swept_keys(jobs)
    for key in keys:
        done[key] = done[key].astype(str)
    grouped = done.groupby(keys, dropna=False, sort=True) if keys else done.groupby(lambda _: "all")
    table = grouped.agg(
        accuracy=("accuracy", "mean"),
        accuracy_std=("accuracy", "std"),
        seeds=("seed", "nunique"),
        **{c: (c, "mean") for c in [*NUMBERS[1:], "baseline_accuracy"]},
        **{c: (c, "mean") for c in ["teacher_accuracy", "student_accuracy", "steps", *INT8]},
        **{c: (c, "first") for c in ["pattern", *(f"choice.{g}" for g in ("task", "model", "pruner"))]},
    ).reset_index()
    if not keys:
        table = table.drop(columns=table.columns[0])
    table["accuracy_std"] = table["accuracy_std"].fillna(0.0)
    baseline = table["baseline_accuracy"]
    table["drop_rel_pct"] = (baseline - table["accuracy"]) / baseline * 100.0
    # KD rows: the gap between the student without KD and the teacher, and the fraction of it the KD term closed
    gap = table["teacher_accuracy"] - table["student_accuracy"]
    table["kd_gap_closed_pct"] = (table["accuracy"] - table["student_accuracy"]) / gap.where(gap != 0) * 100.0
    kd_columns = ["teacher_accuracy", "student_accuracy", "kd_gap_closed_pct"]
    table = with_recovery(table)
    optional = [*kd_columns, "oneshot_accuracy", "recovered_pct", "steps", *INT8]
    table = table.drop(columns=[c for c in optional if table[c].isna().all()])
    return table.drop(columns=["baseline_accuracy", "pattern", *(f"choice.{g}" for g in ("task", "model", "pruner"))])


def target_of(row: pd.Series) -> tuple:
    """A row's compression target: task, model, measured pattern and sparsity (to 2 decimals)."""
    sparsity = row["sparsity"]
    return (row["choice.task"], row["choice.model"], str(row["pattern"]), round(float(sparsity), 2))


def with_recovery(table: pd.DataFrame) -> pd.DataFrame:
    """`oneshot_accuracy` and `recovered_pct` of every trained, compressed row that has one-shot rows of its target
    (module docstring); NaN elsewhere."""
    table["oneshot_accuracy"] = table["recovered_pct"] = float("nan")
    compressed = table["sparsity"].fillna(0) > 0
    oneshot = table[compressed & (table["steps"] == 0)]
    for index, row in table[compressed & (table["steps"] > 0)].iterrows():
        same = oneshot[[target_of(r) == target_of(row) for _, r in oneshot.iterrows()]]
        if same.empty:
            continue
        own = same[same["choice.pruner"] == row["choice.pruner"]]
        reference = own.iloc[0] if len(own) else same.loc[same["accuracy"].idxmax()]
        drop = row["baseline_accuracy"] - reference["accuracy"]
        table.loc[index, "oneshot_accuracy"] = reference["accuracy"]
        if not pd.isna(drop) and drop > 0:  # a one-shot row at or above dense lost nothing to recover
            table.loc[index, "recovered_pct"] = (row["accuracy"] - reference["accuracy"]) / drop * 100.0
    return table


def to_markdown(table: pd.DataFrame, failed: pd.DataFrame) -> str:
    """A Markdown table (no extra dependency): accuracy as mean ± std, sizes in MB, blanks for unknowns."""

    def cell(column: str, value, row) -> str:
        if pd.isna(value) if not isinstance(value, list | dict) else False:
            return ""
        if column == "accuracy":
            return f"{value:.4f} ± {row['accuracy_std']:.4f}"
        if isinstance(value, float):
            return f"{value:.4g}" if column != "sparsity" else f"{value:.3f}"
        return str(value)

    columns = [c for c in table.columns if c != "accuracy_std"]
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
    jobs.to_csv(out_dir / "jobs.csv", index=False)
    table = summarize_jobs(jobs)
    table.to_csv(out_dir / "summary.csv", index=False)
    failed = jobs[jobs["status"] != "completed"]
    (out_dir / "summary.md").write_text(to_markdown(table, failed))
    plot_all(jobs[jobs["status"] == "completed"], out_dir, swept_keys(jobs))
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
