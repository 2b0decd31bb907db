"""Bad input from the command line and the file system: one `error: ...` line, exit code 2, nothing written; a run
folder that is a file or already completed is refused; a full disk or an unwritable folder loses no results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CNN_SMOKE, compose_cfg


def cli(tmp_path: Path, *overrides: str, run_dir: Path | None = None, env: dict | None = None):
    run_dir = run_dir or tmp_path / "run"
    command = [sys.executable, "-m", "compress_sweeps", *CNN_SMOKE, *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env or os.environ, timeout=600)


def one_line(done: subprocess.CompletedProcess, stream: str = "stderr") -> str:
    """The command's last line on `stream`; no traceback and no Hydra wrapper anywhere."""
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "Error executing job" not in output, output
    return [text for text in getattr(done, stream).splitlines() if text.strip()][-1]


# one bad input of each kind, through the command line: before anything exists, one line, exit code 2
@pytest.mark.runs
@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["pruner=magnitude", "pruner.target_sparsity=1.5"], "error: pruner.target_sparsity=1.5 is out of range:"),
        (["pruner=magnitude", "pruner.pattern=3:2"], "error: pruner.pattern=3:2 is not a pattern"),
        (["trainer.batch_size=1.5"], "error: trainer.batch_size=1.5 has the wrong type: must be an integer >= 1"),
        (["seed=-1"], "error: seed=-1 is out of range: must be an integer >= 0"),
        (["model=minilm"], "error: model=minilm takes text: must take images"),
        (["optimized_metric=eval/acc"], "error: optimized_metric=eval/acc is not measured"),
        (["trainer.lr_schedule=step"], "error: trainer.lr_schedule=step is unknown"),
        (["paths.output_dir=/tmp/elsewhere"], "error: paths.output_dir=/tmp/elsewhere cannot be set"),
        (["paths.root=/etc/hostname"], "error: paths.root=/etc/hostname is a file"),
        (
            ["task=text_files", "model=minilm", "task.train_file=/nope.csv", "task.validation_file=/nope.csv"],
            "error: task.train_file=/nope.csv does not exist",
        ),
    ],
    ids=["range", "pattern", "type", "seed", "combination", "objective", "choice", "output_dir", "root", "file"],
)
def test_cli_refuses_a_bad_setting_before_anything_exists(tmp_path, overrides, line):
    done = cli(tmp_path, *overrides)
    assert done.returncode == 2 and one_line(done).startswith(line), done.stderr
    assert not (tmp_path / "run").exists()  # no folder, no .hydra, no log, no checkpoint: nothing half-written
    assert not (tmp_path / "outputs").exists()


@pytest.mark.runs
def test_cli_names_a_bad_setting_found_at_attach_and_records_it(tmp_path):
    done = cli(tmp_path, "pruner=magnitude", "pruner.include=[attention]")
    assert done.returncode == 2 and one_line(done).startswith("error: pruner.include=[attention] matches no layer")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and results["error"].startswith("ConfigError: ")
    assert "train/loss" not in results["metrics"] and not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.runs
def test_a_run_folder_under_a_file_is_refused(tmp_path):
    (tmp_path / "a_file").write_text("x")
    done = cli(tmp_path, run_dir=tmp_path / "a_file" / "run")
    assert done.returncode == 2
    assert one_line(done).startswith(f"error: hydra.run.dir={tmp_path / 'a_file' / 'run'} lies under a file")


@pytest.mark.runs
def test_a_completed_run_folder_is_not_overwritten(tmp_path):
    assert cli(tmp_path).returncode == 0
    before = (tmp_path / "run" / "results.json").read_text()
    done = cli(tmp_path, "seed=1")
    assert done.returncode == 2 and "holds a completed run" in one_line(done)
    assert (tmp_path / "run" / "results.json").read_text() == before


@pytest.mark.runs
def test_a_full_disk_ends_in_one_line_and_a_results_file_it_names(tmp_path):
    """The checkpoint cannot be written (RLIMIT_FSIZE stands in for a full disk): the run fails with one line
    naming the cause, and results.json, small enough to be written, records the failure where the line says."""
    limit = 60_000  # bytes: above results.json, below the CNN_SMOKE's first checkpoint (weights + AdamW moments)
    code = (
        "import resource, runpy, sys; "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
        "sys.argv = ['compress_sweeps', *sys.argv[1:]]; runpy.run_module('compress_sweeps', run_name='__main__')"
    )
    run_dir = tmp_path / "run"
    command = [sys.executable, "-c", code, *CNN_SMOKE, "trainer.max_steps=4", "trainer.checkpoint_every=2"]
    command.append(f"hydra.run.dir={run_dir}")
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=os.environ, timeout=600)
    assert done.returncode == 1, done.stderr
    line = one_line(done, "stdout")  # the job log's last line, which the console shows too
    assert "run failed: OSError" in line and "file size limit" in line and f"(results and traceback: {run_dir}" in line
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed" and "cannot write" in results["error"]
    assert not list((run_dir / "checkpoint").glob(".last.pt.*"))  # no half-written checkpoint left behind


def test_results_that_cannot_be_written_in_the_run_folder_go_beside_it(tmp_path, capsys):
    """The run folder is replaced by a file mid-run, so nothing can be written into it: the results land beside it
    and one line says where."""
    from compress_sweeps.run.record import RunRecord

    cfg = compose_cfg(CNN_SMOKE, output_dir=tmp_path / "run")
    with pytest.raises(RuntimeError), RunRecord(cfg) as record:
        (tmp_path / "run").write_text("a file now")  # e.g. another process removed the folder and took the name
        raise RuntimeError("after training")
    assert record.results_path == tmp_path / "run.results.json"
    assert json.loads(record.results_path.read_text())["status"] == "failed"
    [line] = [text for text in capsys.readouterr().err.splitlines() if text.startswith("error:")]
    assert line.startswith(f"error: cannot write {tmp_path / 'run' / 'results.json'}: ")
    assert line.endswith(f"the results are in {record.results_path}")
