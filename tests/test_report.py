"""The sweep report (table + plots) and the W&B sweep export, on real sweep folders and on hand-made ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from compress_sweeps.reporting.plots import pareto_front
from compress_sweeps.reporting.report import load_jobs, summarize_jobs, write_report
from compress_sweeps.sweeps.wandb_sweep import wandb_sweep_config

ROOT = Path(__file__).resolve().parents[1]


def fake_job(
    sweep: Path,
    name: str,
    overrides: dict,
    accuracy: float,
    *,
    sparsity=0.0,
    pattern=None,
    seed=0,
    pruner="none",
    distiller="none",
    status="completed",
    metrics: dict | None = None,
    steps: int | None = None,
    int8: dict | None = None,
    metric: str = "eval/accuracy",
) -> None:
    """A job folder as a run leaves it (only the files the report reads), with chosen figures; `accuracy` is the
    value of `metric` (eval/perplexity for a causal LM's job)."""
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    choices = {"task": "bbc_news", "model": "minilm", "pruner": pruner, "quantizer": "none", "distiller": distiller}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    results = {
        "status": status,
        "error": None if status == "completed" else "ValueError: boom",
        "seed": seed,
        "metrics": ({metric: accuracy} | (metrics or {})) if status == "completed" else {},
        "compression": {
            "sparsity": sparsity,
            "pattern": pattern,
            "bits": 32,
            "size_bytes": int(4e6 * (1 - sparsity)) + 1,
            "latency_ratio": 1.0 - 0.5 * sparsity,  # as if the pruned model ran faster than the dense one
            "speedup": 1.0 / (1.0 - 0.5 * sparsity),
        }
        | ({"int8_export": int8} if int8 else {}),
    }
    if steps is not None:
        results["optimizer_steps"] = steps
    (folder / "results.json").write_text(json.dumps(results))


def test_kd_rows_show_the_teacher_the_student_without_kd_and_the_gap_closed(tmp_path):
    fake_job(tmp_path, "student", {"distiller": "none"}, 0.80)  # the reference job of the KD sweep
    for temperature, accuracy in [(1, 0.85), (4, 0.90)]:
        teacher = {"kd/teacher_accuracy": 0.90}
        fake_job(tmp_path, f"kd{temperature}", {"distiller.temperature": temperature}, accuracy, distiller="logits",
                 metrics=teacher)  # fmt: skip
    table = summarize_jobs(load_jobs(tmp_path))
    kd = table[table["kd_gap_closed_pct"].notna()].sort_values("accuracy")
    assert list(kd["teacher_accuracy"]) == [0.90, 0.90] and list(kd["student_accuracy"]) == [0.80, 0.80]
    assert list(kd["kd_gap_closed_pct"]) == pytest.approx([50.0, 100.0])  # (0.85 - 0.80) / (0.90 - 0.80), ...


def test_damage_recovered_per_compression_target(tmp_path):
    """Dense 0.90; per target one-shot rows (0 steps) and trained rows (100 steps) of the same measured pattern and
    sparsity: each trained row shows the share of its one-shot drop that training recovered."""
    fake_job(tmp_path, "dense", {"pruner": "none", "trainer.max_steps": 0}, 0.90, steps=0)
    rows = [  # pruner, steps, pattern, accuracy
        ("wanda", 0, "1x1", 0.80),
        ("wanda", 100, "1x1", 0.85),  # recovered (0.85 - 0.80) / (0.90 - 0.80) = 50%
        ("sparsegpt", 0, "1x1", 0.86),
        ("sparsegpt", 100, "1x1", 0.89),  # (0.89 - 0.86) / (0.90 - 0.86) = 75%
        ("snip_momentum", 100, "1x1", 0.88),  # no one-shot of its own: the best one-shot (sparsegpt): 50%
        ("wanda", 0, "2:4", 0.70),
        ("wanda", 100, "2:4", 0.88),  # (0.88 - 0.70) / (0.90 - 0.70) = 90%, against the 2:4 one-shot only
        ("snip_momentum", 100, "4x1", 0.87),  # no one-shot row of this target: nothing to recover from
        ("sparsegpt", 0, "2x2", 0.91),  # one shot above dense: no drop, so no share of one to recover
        ("sparsegpt", 100, "2x2", 0.92),
    ]
    for pruner, steps, pattern, accuracy in rows:
        overrides = {"pruner": pruner, "trainer.max_steps": steps, "pruner.pattern": pattern}
        fake_job(tmp_path, f"{pruner}-{steps}-{pattern}", overrides, accuracy, sparsity=0.5, pattern=pattern,
                 pruner=pruner, steps=steps)  # fmt: skip
    table = summarize_jobs(load_jobs(tmp_path)).set_index(["pruner", "trainer.max_steps", "pruner.pattern"])
    recovered = table["recovered_pct"].dropna().to_dict()
    assert recovered == pytest.approx(
        {
            ("wanda", "100", "1x1"): 50.0,
            ("sparsegpt", "100", "1x1"): 75.0,
            ("snip_momentum", "100", "1x1"): 50.0,
            ("wanda", "100", "2:4"): 90.0,
        }
    )
    assert table.loc[("snip_momentum", "100", "1x1"), "oneshot_accuracy"] == 0.86
    assert table.loc[("sparsegpt", "100", "2x2"), "oneshot_accuracy"] == 0.91  # shown, with no recovered share
    assert table.loc[("wanda", "0", "2:4"), "drop_rel_pct"] == pytest.approx((0.90 - 0.70) / 0.90 * 100)
    assert list(table["steps"].dropna().unique()) == [0, 100]
    markdown = (write_report(tmp_path) / "summary.md").read_text()
    assert "recovered_pct" in markdown and "| 90 |" in markdown


def test_int8_exports_are_reported_beside_each_other(tmp_path):
    for quantizer, accuracy in [("ptq_dynamic", 0.95), ("ptq_static", 0.96), ("q8bert", 0.97)]:
        fake_job(tmp_path, quantizer, {"quantizer": quantizer}, 0.97,
                 int8={"eval/accuracy": accuracy, "latency_ratio": 0.5})  # fmt: skip
    table = summarize_jobs(load_jobs(tmp_path)).set_index("quantizer")
    assert table["int8_accuracy"].to_dict() == {"ptq_dynamic": 0.95, "ptq_static": 0.96, "q8bert": 0.97}


def test_table_means_over_seeds_and_relative_drop(tmp_path):
    for seed, accuracy in [(0, 0.90), (1, 0.92)]:
        fake_job(tmp_path, f"dense{seed}", {"seed": seed}, accuracy, seed=seed)
    for seed, accuracy in [(0, 0.88), (1, 0.86)]:
        fake_job(
            tmp_path,
            f"p{seed}",
            {"pruner": "magnitude", "pruner.target_sparsity": 0.8, "seed": seed},
            accuracy,
            sparsity=0.8,
            pattern="4x1",
            seed=seed,
            pruner="magnitude",
        )
    fake_job(
        tmp_path,
        "bad",
        {"pruner": "magnitude", "pruner.target_sparsity": 1.5},
        0.0,
        status="failed",
        pruner="magnitude",
    )
    table = summarize_jobs(load_jobs(tmp_path))
    pruned = table[table["pruner.target_sparsity"] == "0.8"].iloc[0]
    assert pruned["accuracy"] == pytest.approx(0.87) and pruned["seeds"] == 2
    assert pruned["accuracy_std"] == pytest.approx(pd.Series([0.88, 0.86]).std())
    assert pruned["drop_rel_pct"] == pytest.approx((0.91 - 0.87) / 0.91 * 100)
    out = write_report(tmp_path)
    markdown = (out / "summary.md").read_text()
    assert "0.8700 ± 0.0141" in markdown and "Failed jobs (1)" in markdown and "boom" in markdown
    made = {p.name for p in out.iterdir()}
    assert {"accuracy_vs_latency.png", "accuracy_vs_size.png", "jobs.csv", "summary.csv"} <= made
    assert "accuracy_vs_sparsity.png" not in made  # speed and size are measured x-axes; sparsity is not one
    jobs = pd.read_csv(out / "jobs.csv")
    assert set(jobs["recipe"]) == {"dense", "pruner=magnitude"}  # one legend entry per recipe, same axes


def test_a_job_killed_before_writing_results_is_listed_with_the_failed_ones(tmp_path):
    """A run writes results.json even when it fails; a job folder without one was killed (the kernel's OOM killer,
    a time limit): the report names it instead of leaving it out."""
    fake_job(tmp_path, "dense", {"seed": 0}, 0.9)
    killed = tmp_path / "pruner=sparsegpt"
    (killed / ".hydra").mkdir(parents=True)
    (killed / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["pruner=sparsegpt"]))
    jobs = load_jobs(tmp_path)
    assert dict(zip(jobs["job"], jobs["status"], strict=True)) == {"dense": "completed", killed.name: "no results"}
    markdown = (write_report(tmp_path) / "summary.md").read_text()
    assert "Failed jobs (1)" in markdown and f"`{killed.name}`: no results.json: the job was killed" in markdown
    (tmp_path / "dense" / "results.json").unlink()
    with pytest.raises(FileNotFoundError, match="2 job folders hold none: killed, or still running"):
        load_jobs(tmp_path)


def test_temperature_plot_and_pareto_front(tmp_path):
    for t, accuracy in [(1, 0.80), (2, 0.84), (4, 0.83)]:
        fake_job(tmp_path, f"t{t}", {"distiller.temperature": t}, accuracy, distiller="logits")
    out = write_report(tmp_path)
    assert (out / "accuracy_vs_temperature.png").stat().st_size > 10_000
    points = pd.DataFrame({"size_mb": [1.0, 2.0, 3.0, 2.5], "accuracy": [0.8, 0.79, 0.9, 0.85]})
    assert pareto_front(points)[["size_mb", "accuracy"]].values.tolist() == [[1.0, 0.8], [2.5, 0.85], [3.0, 0.9]]


@pytest.mark.runs
def test_report_command_on_a_real_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    run = [sys.executable, "-m", "compress_sweeps"]
    smoke = ["task=digits", "model=cnn", "trainer=smoke", "logger=none", "trainer.progress=false"]
    done = subprocess.run(
        [*run, "-m", *smoke, "trainer.lr=1e-3,3e-3", f"hydra.sweep.dir={sweep}"],
        capture_output=True,
        text=True,
        env=os.environ,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    shown = subprocess.run([*run, "report", str(sweep)], capture_output=True, text=True, env=os.environ)
    assert shown.returncode == 0, shown.stderr
    table = pd.read_csv(sweep / "report" / "summary.csv")
    accuracies = sorted(json.loads(p.read_text())["metrics"]["eval/accuracy"] for p in sweep.glob("*/results.json"))
    assert sorted(table["accuracy"]) == pytest.approx(accuracies)
    assert list(table["trainer.lr"]) == [0.001, 0.003]
    missing = subprocess.run([*run, "report", str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no such folder" in missing.stderr


WANDB_SWEEP = [sys.executable, "-m", "compress_sweeps", "wandb-sweep"]


@pytest.mark.runs
@pytest.mark.parametrize("sweep_file", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_wandb_sweep_export(sweep_file, tmp_path):
    method = "random" if "interval(" in sweep_file.read_text() else "grid"
    out = tmp_path / "w.yaml"
    if "hydra" not in yaml.safe_load(sweep_file.read_text()):  # the planner's sweep: its jobs are decided as it runs
        refused = subprocess.run([*WANDB_SWEEP, str(sweep_file), "--out", str(out)], capture_output=True, text=True)
        assert refused.returncode == 2 and "no hydra.sweeper.params to translate" in refused.stderr
        assert not out.exists()
        return
    sweeper = yaml.safe_load(sweep_file.read_text())["hydra"]["sweeper"]
    grids = sweeper.get("grids") or []
    command = [*WANDB_SWEEP, str(sweep_file), "--method", method]
    if grids:  # a union of grids: W&B holds one grid per sweep, so the export names one
        refused = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
        assert refused.returncode == 2 and f"export each with --grid 0..{len(grids) - 1}" in refused.stderr
        command += ["--grid", str(len(grids) - 1)]
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(out.read_text())
    assert set(config["parameters"]) == set(sweeper["params"]) | set(grids[-1] if grids else {})
    assert config["command"][-1] == "${args_no_hyphens}" and f"sweep={sweep_file.stem}" in config["command"]
    assert wandb_sweep_config(sweep_file, method, grid=len(grids) - 1 if grids else None) == config


def test_a_causal_lm_sweep_reports_perplexity_lower_is_better(tmp_path):
    fake_job(tmp_path, "dense", {"pruner": "none"}, 40.0, metric="eval/perplexity")
    for pruner, perplexity in [("wanda", 60.0), ("oneshot_magnitude", 400.0)]:
        fake_job(tmp_path, pruner, {"pruner": pruner}, perplexity, sparsity=0.5, pattern="2:4", pruner=pruner,
                 metric="eval/perplexity", steps=0)  # fmt: skip
    jobs = load_jobs(tmp_path)
    table = summarize_jobs(jobs).set_index("pruner")
    assert "perplexity" in table and "accuracy" not in table
    assert table.loc["wanda", "drop_rel_pct"] == pytest.approx(50.0)  # worse than dense: positive, as a drop is
    assert table.loc["oneshot_magnitude", "drop_rel_pct"] == pytest.approx(900.0)
    out = write_report(tmp_path)
    assert (out / "perplexity_vs_size.png").is_file() and not (out / "accuracy_vs_size.png").exists()
    assert (
        "| perplexity |" in (out / "summary.md").read_text().replace(" ± ", " | ")[:400]
        or "perplexity" in (out / "summary.md").read_text().splitlines()[0]
    )
    assert "perplexity" in pd.read_csv(out / "jobs.csv").columns
    points = pd.DataFrame({"size_mb": [1.0, 2.0, 3.0], "ppl": [400.0, 60.0, 40.0]})
    lower = pareto_front(points, "size_mb", "ppl", maximize=False)
    assert lower["ppl"].tolist() == [400.0, 60.0, 40.0]  # each bigger model is better: all on the front
    assert pareto_front(points, "size_mb", "ppl")["ppl"].tolist() == [400.0]  # read as higher-is-better: one point


def test_a_report_refuses_jobs_that_score_different_metrics(tmp_path):
    fake_job(tmp_path, "classifier", {"task": "bbc_news"}, 0.9)
    fake_job(tmp_path, "lm", {"task": "lm_text"}, 40.0, metric="eval/perplexity")
    with pytest.raises(ValueError, match="score different metrics \\(eval/accuracy, eval/perplexity\\)"):
        load_jobs(tmp_path)
