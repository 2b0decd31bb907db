"""Named sweeps expand; sweeps isolate failures, resume finished jobs, and run on the joblib/submitit launchers."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CONF, compose_cfg
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep

from compress_sweeps.run.build import build, check
from compress_sweeps.sweeps.precheck import grid_points
from compress_sweeps.sweeps.sweeper import grid_union, reference_point

ROOT = CONF.parent
PLANNED = {"plan"}  # sweeps whose jobs the planner decides (tests/test_plan.py)
SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml") if p.stem not in PLANNED)
IMAGE_SMOKE = ["task=digits", "model=cnn", "trainer=smoke", "logger=none", "trainer.progress=false"]


def sweep_points(name: str) -> dict[str, list[str]]:
    """{key: [value, ...]} of a sweep file's hydra.sweeper.params, parsed with Hydra's own override grammar."""
    cfg = compose_cfg([f"sweep={name}"], keep_hydra=True)
    params = cfg.hydra.sweeper.params
    parser = OverridesParser.create()
    points = {}
    for key, value in params.items():
        override = parser.parse_override(f"{key}={value}")
        if isinstance(override.value(), IntervalSweep):  # Optuna ranges: both ends must compose
            points[key] = [str(override.value().start), str(override.value().end)]
        else:
            points[key] = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(value)]
    return points


def test_sweep_folder_is_the_sweep_config_group():
    assert (CONF / "sweep").resolve() == (ROOT / "sweeps").resolve()
    for path in (ROOT / "sweeps").glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("# @package _global_"), path
        assert "python -m compress_sweeps -m sweep=" in text, f"{path} lacks the comment with its command"


@pytest.mark.parametrize("name", SWEEPS)
def test_every_grid_point_of_every_sweep_composes_and_passes_the_precheck(name):
    """Each job of the sweep as the precheck lists it (the reference job included), or each combination of an
    Optuna sweep's values (ranges at both ends), composed, built and checked as its job would be."""
    values = sweep_points(name)
    assert values, f"sweeps/{name}.yaml defines no hydra.sweeper.params"
    grid = grid_points(compose_cfg([f"sweep={name}"], keep_hydra=True))
    if grid is None:
        grid = [
            [f"sweep={name}", *p] for p in itertools.product(*([f"{k}={v}" for v in vs] for k, vs in values.items()))
        ]
    for point in grid:
        cfg = compose_cfg(point)
        check(build(cfg), cfg)


def test_the_reference_job_drops_what_it_replaces():
    point = [
        "task=digits",
        "pruner.target_sparsity=0.5",
        "+pruner.groups=[]",
        "model@distiller.teachers.x=cnn",
        "seed=1",
    ]
    assert reference_point(point, ["pruner=none", "distiller=none"]) == [
        "task=digits",
        "seed=1",
        "pruner=none",
        "distiller=none",
    ]


@pytest.mark.runs
def test_a_reference_sweep_runs_the_dense_job_once_and_the_report_measures_drops_against_it(tmp_path):
    sweep = tmp_path / "sweep"
    grid = [*IMAGE_SMOKE, "pruner=magnitude", "pruner.target_sparsity=0.5,0.7", "seed=0,1"]
    grid += ["hydra/sweeper=reference", "hydra.sweeper.reference=['pruner=none']", f"hydra.sweep.dir={sweep}"]
    done = cli("-m", *grid, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 completed" in done.stdout  # 4 grid points + the one dense reference (seed 0), not one per point
    from compress_sweeps.reporting.report import load_jobs, summarize_jobs

    table = summarize_jobs(load_jobs(sweep))
    pruned = table[table["sparsity"] > 0.4]
    assert len(pruned) == 2 and pruned["drop_rel_pct"].notna().all()


def test_a_union_of_grids_holds_oneshot_and_trained_rows_without_nonsense_points():
    """sweeps/oneshot_vs_trained.yaml: one-shot methods at 0 and 100 steps, snip_momentum only at 100, each over the
    shared patterns and seeds, plus the dense reference once; the command line replaces a grid's value."""
    points = grid_points(compose_cfg(["sweep=oneshot_vs_trained"], keep_hydra=True))
    settings = [dict(o.replace("\\", "").split("=", 1) for o in p if not o.startswith("sweep=")) for p in points]
    assert settings[0] == {"seed": "0", "pruner": "none", "trainer.max_steps": "0"}  # the reference, first
    rows = {(s["pruner"], s["trainer.max_steps"], s["pruner.pattern"], s["seed"]) for s in settings[1:]}
    assert len(rows) == len(settings) - 1 == (3 * 2 + 1) * 2 * 2
    assert ("snip_momentum", "100", "2:4", "1") in rows and not any(r[:2] == ("snip_momentum", "0") for r in rows)
    shorter = grid_points(compose_cfg(["sweep=oneshot_vs_trained", "seed=0", "pruner.pattern=2:4"], keep_hydra=True))
    assert len(shorter) == 1 + 3 * 2 + 1


def test_grid_union_orders_params_grid_and_command_line_and_drops_duplicates():
    def product(overrides):  # one job per value of the last key named, for the test
        chosen = {}
        for override in overrides:
            key, _, values = override.partition("=")
            chosen[key] = values.split(",")
        jobs = [[]]
        for key, values in chosen.items():
            jobs = [[*job, f"{key}={v}"] for job in jobs for v in values]
        return jobs

    jobs = grid_union(["a=1,2", "b=0"], [["b=5"], ["a=1", "b=0"]], ["c=9"], product)
    assert jobs == [["a=1", "b=5", "c=9"], ["a=2", "b=5", "c=9"], ["a=1", "b=0", "c=9"]]
    assert grid_union(["a=1"], [], [], product) == [["a=1"]]  # no grids: the params alone


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "compress_sweeps", *args], cwd=cwd, capture_output=True, text=True, env=os.environ
    )


def job_results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


@pytest.mark.runs
def test_failed_job_does_not_stop_the_sweep_and_is_reported(tmp_path):
    sweep = tmp_path / "sweep"
    # a pattern the CNN's first layer (32 rows) does not divide sits in the middle of the grid: only the model
    # shows it, so the precheck lets it through and the job fails when the pruner attaches; the jobs after it run
    patterns = ["pruner=magnitude", "pruner.pattern=4x1,3x1,1x1"]
    done = cli("-m", *IMAGE_SMOKE, *patterns, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 1
    statuses = sorted(r["status"] for r in job_results(sweep).values())
    assert statuses == ["completed", "completed", "failed"]
    assert "2 completed, 1 failed" in done.stdout
    assert "FAILED" in done.stdout and "pruner.pattern=3x1 does not fit layer 'features.0'" in done.stdout


@pytest.mark.runs
def test_precheck_stops_a_sweep_with_bad_settings_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    # a pruning schedule ending at step 10 of a 3-step run is only wrong given the trainer: a cross-group check
    grid = ["trainer.lr=1e-3,-1", "trainer.warmup_ratio=0.1,2", "pruner=magnitude", "pruner.end_step=2,10"]
    done = cli("-m", *IMAGE_SMOKE, *grid, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 2
    assert "sweep not started: 7 of 8 jobs have invalid settings" in done.stderr
    assert "trainer.lr=-1 is out of range: must be a number > 0" in done.stderr
    assert "trainer.warmup_ratio=2 is out of range" in done.stderr
    assert "pruner.end_step=10 is beyond the run: must resolve to a step <= 3" in done.stderr
    assert not list(sweep.glob("*/results.json"))  # nothing ran


@pytest.mark.runs
def test_relaunch_runs_only_unfinished_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    first = cli("-m", *IMAGE_SMOKE, "seed=0,1,2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    finished = job_results(sweep)
    # as if the sweep had been killed before its last job finished: that job has no results
    unfinished = sorted(finished)[-1]
    (sweep / unfinished / "results.json").unlink()
    stamps = {job: (sweep / job / "results.json").stat().st_mtime_ns for job in finished if job != unfinished}
    second = cli("-m", *IMAGE_SMOKE, "seed=0,1,2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("skip: already completed") == 2
    assert "1 completed, 2 skipped" in second.stdout
    assert {job: (sweep / job / "results.json").stat().st_mtime_ns for job in stamps} == stamps  # not re-run
    assert job_results(sweep)[unfinished]["status"] == "completed"


@pytest.mark.runs
def test_named_sweep_with_the_joblib_launcher(tmp_path):
    sweep = tmp_path / "sweep"
    done = cli(
        "-m",
        "sweep=seeds",
        *IMAGE_SMOKE,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(r["seed"] for r in job_results(sweep).values()) == [0, 1, 2]
    assert all(r["threads"] == max(1, (os.cpu_count() or 1) // 2) for r in job_results(sweep).values())


@pytest.mark.runs
def test_submitit_local_launcher(tmp_path):
    sweep = tmp_path / "sweep"
    done = cli(
        "-m",
        *IMAGE_SMOKE,
        "seed=0,1",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(r["status"] for r in job_results(sweep).values()) == ["completed", "completed"]


@pytest.mark.parametrize(("preset", "gpus"), [("slurm_cpu", 0), ("slurm_gpu", 1)])
def test_slurm_presets_compose_onto_submitit(preset, gpus):
    cfg = compose_cfg([f"hydra/launcher={preset}", "hydra.launcher.partition=short"], keep_hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node) == ("short", gpus)
    assert launcher.array_parallelism >= 1 and launcher.timeout_min > 0


@pytest.mark.runs
def test_killed_sweep_resumes_without_rerunning_finished_jobs(tmp_path):
    import signal
    import time

    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "compress_sweeps",
        "-m",
        *IMAGE_SMOKE,
        "trainer.max_steps=150",
        "seed=0,1,2,3",
        f"hydra.sweep.dir={sweep}",
    ]
    first = subprocess.Popen(
        args, cwd=tmp_path, env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while len(list(sweep.glob("*/results.json"))) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # half-way: some jobs finished, the rest never started or were cut off
    first.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("*/results.json")}
    assert 1 <= len(finished) < 4
    second = cli("-m", *IMAGE_SMOKE, "trainer.max_steps=150", "seed=0,1,2,3", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    after = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("*/results.json")}
    assert len(after) == 4 and all(r["status"] == "completed" for r in job_results(sweep).values())
    rerun = [job for job in finished if after[job] != finished[job]]
    assert rerun == [], f"completed jobs ran twice: {rerun}"
    assert second.stdout.count("skip: already completed") == len(finished)


@pytest.mark.runs
def test_each_sweep_job_is_its_own_wandb_run_in_the_sweep_group(tmp_path):
    from wandb_records import run_file, wait_for_exit

    sweep = tmp_path / "sweep"
    smoke = [o for o in IMAGE_SMOKE if o != "logger=none"]
    done = cli("-m", *smoke, "logger=wandb", "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    files = sorted(Path(os.environ["WANDB_DIR"]).rglob("run-*.wandb"))
    assert len(files) == 2 and run_file(Path(os.environ["WANDB_DIR"])) in files
    for path in files:
        found = {r.WhichOneof("record_type"): r for r in wait_for_exit(path)}
        assert found["run"].run.run_group == sweep.name  # grouped per sweep
        assert found["exit"].exit.exit_code == 0  # each job finished its own run
        columns = {item.key for item in found["run"].run.config.update}
        assert {"seed", "trainer.max_steps", "model.channels"} <= columns


@pytest.mark.runs
def test_a_bad_objective_stops_the_sweep_and_the_fixed_grid_then_runs(tmp_path):
    """A mistyped optimized_metric is found before any job trains (it used to fail every finished job); after the
    fix, re-launching into the same folder runs the grid and exits 0, whatever the first launch left there."""
    sweep = tmp_path / "sweep"
    grid = [*IMAGE_SMOKE, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    done = cli("-m", *grid, "optimized_metric=eval/acc", cwd=tmp_path)
    assert done.returncode == 2 and "optimized_metric=eval/acc is not measured" in done.stderr
    assert not list(sweep.glob("*/results.json"))
    done = cli("-m", *grid, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 completed" in done.stdout and len(job_results(sweep)) == 2


@pytest.mark.runs
def test_the_summary_counts_this_launch_and_a_job_whose_model_file_is_gone_runs_again(tmp_path):
    sweep = tmp_path / "sweep"
    failing = cli(
        "-m", *IMAGE_SMOKE, "pruner=magnitude", "pruner.pattern=3x1", f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert failing.returncode == 1  # the 3x1 job failed at attach
    done = cli("-m", *IMAGE_SMOKE, "pruner=magnitude", "pruner.pattern=4x1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stdout  # the old failure is not this launch's
    assert "1 completed" in done.stdout and "1 job folders of earlier launches" in done.stdout
    [job] = [p.parent for p in sweep.glob("*/results.json") if json.loads(p.read_text())["status"] == "completed"]
    (job / "model.safetensors").unlink()
    again = cli("-m", *IMAGE_SMOKE, "pruner=magnitude", "pruner.pattern=4x1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert again.returncode == 0 and "skip: already completed" not in again.stdout + again.stderr
    assert (job / "model.safetensors").is_file() and "1 completed" in again.stdout


@pytest.mark.runs
def test_output_dir_cannot_point_every_job_at_one_folder(tmp_path):
    done = cli("-m", *IMAGE_SMOKE, "seed=0,1", f"paths.output_dir={tmp_path / 'one'}", cwd=tmp_path)
    assert done.returncode == 2 and "paths.output_dir" in done.stderr and "cannot be set" in done.stderr
    assert not (tmp_path / "one").exists()
