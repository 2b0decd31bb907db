"""Checks before any training: each bad input fails with one message naming the key, the value and what is allowed.

Most rows fail in `build`/`check` (no data, no model); the model-dependent ones fail when the compressors attach to
the tiny CNN, before the first optimizer step. A few go through the CLI: one `error: ...` line, exit code 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_cfg
from omegaconf import OmegaConf

from compress_sweeps import train
from compress_sweeps.errors import ConfigError, config_error, show
from compress_sweeps.models import ConvNet
from compress_sweeps.models.runs import save_model
from compress_sweeps.run import artifacts
from compress_sweeps.run.build import build, check

CNN = ["task=digits", "model=cnn", "trainer=smoke", "logger=none", "trainer.progress=false"]
CNN_TEACHER = ["model@distiller.teacher.model=cnn_teacher", "distiller.teacher.finetune=null"]
RANGE, NO_LAYER = "is out of range", "matches no layer"

# name: (overrides, key, value, problem); `{pruned_run}` and `{three_label_run}` are run folders made below
CONFIG_TIME = {
    "sparsity above 1": (["pruner=magnitude", "pruner.target_sparsity=1.5"], "pruner.target_sparsity", 1.5, RANGE),
    "negative sparsity": (["pruner=snip", "pruner.target_sparsity=-0.2"], "pruner.target_sparsity", -0.2, RANGE),
    "sparsity contradicts N:M": (
        ["pruner=magnitude", "pruner.pattern=2:4", "pruner.target_sparsity=0.8"],
        "pruner.target_sparsity",
        0.8,
        "contradicts pruner.pattern=2:4",
    ),
    "q8bert 1 bit": (["quantizer=q8bert", "quantizer.bits=1"], "quantizer.bits", 1, RANGE),
    "polino 1 bit": (["quantizer=quantized_distillation", "quantizer.bits=1"], "quantizer.bits", 1, RANGE),
    "temperature 0": (["distiller=logits", "distiller.temperature=0"], "distiller.temperature", 0, RANGE),
    "negative temperature": (["distiller=multilayer", "distiller.temperature=-1"], "distiller.temperature", -1, RANGE),
    "negative start_step": (["pruner=magnitude", "pruner.start_step=-3"], "pruner.start_step", -3, RANGE),
    "fraction above 1": (["pruner=magnitude", "pruner.end_step=1.5"], "pruner.end_step", 1.5, RANGE),
    "negative max_steps": (["trainer.max_steps=-5"], "trainer.max_steps", -5, RANGE),
    "unknown int8 backend": (
        ["quantizer=quantized_distillation", "export.backend=openvino"],
        "export.backend",
        "openvino",
        "is unknown",
    ),
    "export batch 0": (["export=torch", "export.batch_size=0"], "export.batch_size", 0, RANGE),
    "negative quantizer start": (["quantizer=q8bert", "quantizer.start_step=-1"], "quantizer.start_step", -1, RANGE),
    "end before start (steps)": (
        ["pruner=magnitude", "pruner.start_step=50", "pruner.end_step=10"],
        "pruner.end_step",
        10,
        RANGE,
    ),
    "end before start (fractions)": (
        ["pruner=magnitude", "pruner.start_step=0.6", "pruner.end_step=0.2"],
        "pruner.end_step",
        0.2,
        RANGE,
    ),
    "update_frequency 0": (["pruner=magnitude", "pruner.update_frequency=0"], "pruner.update_frequency", 0, RANGE),
    "negative update_frequency": (
        ["pruner=movement", "pruner.update_frequency=-2"],
        "pruner.update_frequency",
        -2,
        RANGE,
    ),
    "pattern 3:2": (["pruner=magnitude", "pruner.pattern=3:2"], "pruner.pattern", "3:2", "is not a pattern"),
    "pattern 0x4": (["pruner=magnitude", "pruner.pattern=0x4"], "pruner.pattern", "0x4", "is not a pattern"),
    "pattern axb": (["pruner=magnitude", "pruner.pattern=axb"], "pruner.pattern", "axb", "is not a pattern"),
    "snip oneshot at step 0": (
        ["pruner=snip", "pruner.start_step=0", "pruner.end_step=0"],
        "pruner.start_step",
        0,
        "prunes before any gradient",
    ),
    "gradient at step 0": (["pruner=gradient", "pruner.start_step=0"], "pruner.start_step", 0, "prunes before any"),
    "movement iterative from step 0": (
        ["pruner=movement", "pruner.start_step=0", "pruner.end_step=20"],
        "pruner.start_step",
        0,
        "prunes before any gradient",
    ),
    "snip_momentum in a group at step 0": (
        ["pruner=snip_momentum", "pruner.groups=[{start_step:0,end_step:1}]"],
        "pruner.groups[0].start_step",
        0,
        "prunes before any gradient",
    ),
    "unknown key in a group": (
        ["pruner=magnitude", "pruner.groups=[{pattren:2:4}]"],
        "pruner.groups[0]",
        ["pattren"],
        "has unknown keys",
    ),
    "momentum above 1": (["pruner=snip_momentum", "pruner.criterion.beta=1.5"], "pruner.criterion.beta", 1.5, RANGE),
    "min per layer above the target": (
        ["pruner=magnitude", "pruner.target_sparsity=0.5", "pruner.min_sparsity_per_layer=0.7"],
        "pruner.min_sparsity_per_layer",
        0.7,
        "exceeds the target",
    ),
    "schedule beyond max_steps": (
        ["trainer=smoke", "pruner=magnitude", "pruner.end_step=10"],
        "pruner.end_step",
        10,
        "is beyond the run",
    ),
    "quantizer starts after the run": (
        ["trainer=smoke", "quantizer=q8bert", "quantizer.start_step=5"],
        "quantizer.start_step",
        5,
        "is beyond the run",
    ),
    "QAT on a pruned model without pattern_lock": (
        ["model=from_run", "model.folder={pruned_run}", "quantizer=q8bert"],
        "pruner",
        "none",
        "does not keep the pruned zeros",
    ),
    "QAT + magnitude on a pruned model": (
        ["model=from_run", "model.folder={pruned_run}", "quantizer=differentiable", "pruner=magnitude"],
        "pruner",
        "magnitude",
        "does not keep the pruned zeros",
    ),
    "from_run on a failed run": (
        ["model=from_run", "model.folder={failed_run}"],
        "model.folder",
        "{failed_run}",
        "holds a failed run",
    ),
    "from_run without a folder": (["model=from_run"], "model.folder", "???", "is missing"),
    "negative seed": (["seed=-1"], "seed", -1, RANGE),
    "zero grad_accum_steps": (["trainer.grad_accum_steps=0"], "trainer.grad_accum_steps", 0, RANGE),
    "kd loss unknown": (["distiller=logits", "distiller.kd_loss=js"], "distiller.kd_loss", "js", "is unknown"),
    "multilayer match loss": (
        ["distiller=multilayer", "distiller.matches=[{feature:hidden,loss:kl,teacher_layer:1,student_layer:0}]"],
        "distiller.matches[0].loss",
        "kl",
        "is unknown",
    ),
}

# checks that need the model: they fail at attach, before the first optimizer step (digits + the tiny CNN)
ATTACH_TIME = {
    "pruner include matches nothing": (
        ["pruner=magnitude", "pruner.include=[attention]"],
        "pruner.include",
        ["attention"],
        "matches no layer",
    ),
    "pruner exclude leaves nothing": (["pruner=magnitude", "pruner.exclude=[.]"], "pruner.exclude", ["."], NO_LAYER),
    "quantizer include matches nothing": (
        ["quantizer=q8bert", "quantizer.include=[query]"],
        "quantizer.include",
        ["query"],
        NO_LAYER,
    ),
    "pattern_lock selects nothing": (
        ["pruner=pattern_lock", "pruner.include=[nothere]"],
        "pruner.include",
        ["nothere"],
        NO_LAYER,
    ),
    "N:M on 9 input columns": (
        ["pruner=magnitude", "pruner.pattern=2:4"],
        "pruner.pattern",
        "2:4",
        "does not fit layer 'features.0'",
    ),
    "NxM on 32 output rows": (
        ["pruner=magnitude", "pruner.pattern=3x1"],
        "pruner.pattern",
        "3x1",
        "does not fit layer 'features.0'",
    ),
    "head pattern on a CNN": (
        ["pruner=magnitude", "pruner.pattern=head"],
        "pruner.pattern",
        "head",
        "finds no attention block in this ConvNet",
    ),
    "distiller match names a missing student layer": (
        [
            "distiller=multilayer",
            *CNN_TEACHER,
            "distiller.matches=[{teacher_layer:features.0,student_layer:features.9,feature:hidden}]",
        ],
        "distiller.matches[0].student_layer",
        "features.9",
        "is not a layer",
    ),
    "distiller match block index on a CNN teacher": (
        ["distiller=multilayer", *CNN_TEACHER, "distiller.matches=[{teacher_layer:3,student_layer:fc,feature:hidden}]"],
        "distiller.matches[0].teacher_layer",
        3,
        RANGE,
    ),
    "distiller widths differ without projection": (
        [
            "distiller=multilayer",
            *CNN_TEACHER,
            "distiller.projection=false",
            "distiller.matches=[{teacher_layer:fc,student_layer:fc,feature:hidden}]",
        ],
        "distiller.matches[0]",
        "{teacher_layer: fc, student_layer: fc}",
        "pairs a student (128,) with a teacher (256,) feature",
    ),
    "teacher with another label set": (
        [
            "distiller=logits",
            "model@distiller.teachers.main.model=from_run",
            "distiller.teachers.main.model.folder={three_label_run}",
            "distiller.teachers.main.finetune=null",
        ],
        "distiller.teachers.main.model.folder",
        "{three_label_run}",
        "has another label set",
    ),
}


@pytest.fixture
def run_folders(tmp_path) -> dict[str, str]:
    """`pruned_run`: a finished run whose results say it was pruned; `failed_run`: one that failed;
    `three_label_run`: a CNN with 3 labels."""
    pruned, failed = tmp_path / "pruned_run", tmp_path / "failed_run"
    pruned.mkdir()
    failed.mkdir()
    compression = {"sparsity": 0.5, "pattern": "1x1", "bits": 32}
    (pruned / artifacts.RESULTS).write_text(json.dumps({"status": "completed", "compression": compression}))
    (failed / artifacts.RESULTS).write_text(json.dumps({"status": "failed", "error": "KeyboardInterrupt: "}))
    cnn = OmegaConf.create({"_target_": "compress_sweeps.models.ConvNet", "channels": [4], "hidden": 8})
    three = save_model(ConvNet(3, channels=[4], hidden=8), tmp_path / "three_label_run", None, cnn, 3).parent
    return {"pruned_run": str(pruned), "failed_run": str(failed), "three_label_run": str(three)}


def filled(items, folders: dict[str, str]):
    if isinstance(items, list):
        return [filled(item, folders) for item in items]
    if not isinstance(items, str):
        return items
    for name, folder in folders.items():
        items = items.replace(f"{{{name}}}", folder)
    return items


def check_config(cfg, train_size: int | None = None) -> None:
    """What a job and the sweep precheck run before anything loads."""
    check(build(cfg), cfg, train_size)


def assert_names(error: BaseException, key: str, value, problem: str) -> None:
    """The error is a one-line ConfigError naming `key` and `value`, of the kind `problem` says."""
    cause = config_error(error)
    assert cause is not None, f"not a ConfigError: {error!r}"
    assert (cause.key, show(cause.value)) == (key, show(value)), str(cause)
    assert cause.problem.startswith(problem), str(cause)
    assert "\n" not in str(cause)


@pytest.mark.parametrize(("overrides", "key", "value", "problem"), list(CONFIG_TIME.values()), ids=list(CONFIG_TIME))
def test_bad_input_fails_before_anything_loads(overrides, key, value, problem, run_folders):
    cfg = compose_cfg(filled(overrides, run_folders))
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    assert_names(caught.value, key, filled(value, run_folders), problem)


@pytest.mark.parametrize(("overrides", "key", "value", "problem"), list(ATTACH_TIME.values()), ids=list(ATTACH_TIME))
def test_model_dependent_bad_input_fails_at_attach(tmp_path, overrides, key, value, problem, run_folders):
    cfg = compose_cfg([*CNN, *filled(overrides, run_folders)], output_dir=tmp_path / "run")
    check_config(cfg)  # nothing wrong that the config alone shows
    with pytest.raises(Exception) as caught:
        train.run(cfg)
    assert_names(caught.value, key, filled(value, run_folders), problem)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "train/loss" not in results["metrics"]


def test_schedule_steps_count_epochs_and_gradient_accumulation():
    # 1000 examples / batch 10 = 100 micro-batches per epoch = 25 optimizer steps with 4 micro-batches per step
    epochs = ["trainer.max_steps=null", "trainer.epochs=1", "trainer.batch_size=10", "pruner=magnitude"]
    check_config(compose_cfg([*epochs, "pruner.end_step=40", "trainer.grad_accum_steps=1"]), train_size=1000)
    check_config(compose_cfg([*epochs, "pruner.end_step=40", "trainer.grad_accum_steps=4"]))  # size unknown yet
    with pytest.raises(ConfigError) as caught:
        check_config(compose_cfg([*epochs, "pruner.end_step=40", "trainer.grad_accum_steps=4"]), train_size=1000)
    assert_names(caught.value, "pruner.end_step", 40, "is beyond the run")
    assert "<= 25, the run's 25 optimizer steps" in caught.value.allowed
    check_config(compose_cfg([*epochs, "pruner.end_step=25", "trainer.grad_accum_steps=4"]), train_size=1000)
    check_config(compose_cfg([*epochs, "pruner.end_step=0.9", "trainer.grad_accum_steps=4"]), train_size=1000)


def test_good_settings_pass(run_folders):
    check_config(compose_cfg(["pruner=snip_momentum", "quantizer=q8bert", "distiller=logits"]))
    locked = ["model=from_run", f"model.folder={run_folders['pruned_run']}", "quantizer=q8bert", "pruner=pattern_lock"]
    check_config(compose_cfg(locked))
    check_config(compose_cfg(["pruner=magnitude", "pruner.start_step=0", "pruner.end_step=0"]))  # |W| needs no grad


def cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "compress_sweeps", *CNN, *overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=os.environ)


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("pruner.target_sparsity=1.5", "error: pruner.target_sparsity=1.5 is out of range: must be in (0, 1) or null"),
        ("pruner.pattern=3:2", "error: pruner.pattern=3:2 is not a pattern"),
        ("pruner.include=[attention]", "error: pruner.include=[attention] matches no layer"),  # at attach
    ],
)
def test_cli_prints_one_line_and_exits_2(tmp_path, override, line):
    done = cli(tmp_path, "pruner=magnitude", override)
    assert done.returncode == 2, done.stderr
    lines = [text for text in done.stderr.splitlines() if text.strip()]
    assert lines[-1].startswith(line)
    assert "Traceback" not in done.stderr and "Error executing job" not in done.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and results["error"].startswith("ConfigError: ")
