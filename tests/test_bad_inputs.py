"""Checks before any training: each bad input fails with one message naming the key, the value and what is allowed.

Most rows fail in `check_config` (no data, no model); the model-dependent ones fail when the compressors attach to
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
from compress_sweeps.checks import check_config
from compress_sweeps.errors import ConfigError, config_error
from compress_sweeps.models import ConvNet
from compress_sweeps.models.runs import save_model
from compress_sweeps.run import artifacts

CNN = ["task=digits", "model=cnn", "trainer=smoke", "logger=none", "trainer.progress=false"]
CNN_TEACHER = ["model@distiller.teacher.model=cnn_teacher", "distiller.teacher.finetune=null"]
PATTERN_ALLOWED = "is not a pattern: must be NxM blocks with N, M >= 1"

# (overrides, what the message must contain); `{pruned_run}` and `{three_label_run}` are run folders made below
CONFIG_TIME = {
    "sparsity above 1": (
        ["pruner=magnitude", "pruner.target_sparsity=1.5"],
        "pruner.target_sparsity=1.5 is out of range: must be in (0, 1) or null",
    ),
    "negative sparsity": (
        ["pruner=snip", "pruner.target_sparsity=-0.2"],
        "pruner.target_sparsity=-0.2 is out of range",
    ),
    "sparsity contradicts N:M": (
        ["pruner=magnitude", "pruner.pattern=2:4", "pruner.target_sparsity=0.8"],
        "pruner.target_sparsity=0.8 contradicts pruner.pattern=2:4: must be null or 0.5",
    ),
    "q8bert 1 bit": (
        ["quantizer=q8bert", "quantizer.bits=1"],
        "quantizer.bits=1 is out of range: must be an integer in [2, 8]",
    ),
    "polino 1 bit": (
        ["quantizer=quantized_distillation", "quantizer.bits=1"],
        "quantizer.bits=1 is out of range: must be an integer in [2, 16]",
    ),
    "temperature 0": (
        ["distiller=logits", "distiller.temperature=0"],
        "distiller.temperature=0 is out of range: must be > 0",
    ),
    "negative temperature": (
        ["distiller=multilayer", "distiller.temperature=-1"],
        "distiller.temperature=-1 is out of range",
    ),
    "negative start_step": (
        ["pruner=magnitude", "pruner.start_step=-3"],
        "pruner.start_step=-3 is out of range: must be an int step >= 0 or a float fraction of the run in [0, 1]",
    ),
    "fraction above 1": (["pruner=magnitude", "pruner.end_step=1.5"], "pruner.end_step=1.5 is out of range"),
    "negative max_steps": (["trainer.max_steps=-5"], "trainer.max_steps=-5 is out of range: must be an integer >= 1"),
    "unknown int8 backend": (
        ["quantizer=quantized_distillation", "quantizer.int8_backend=openvino"],
        "quantizer.int8_backend=openvino is unknown: must be one of onnxruntime | torch",
    ),
    "negative quantizer start": (
        ["quantizer=q8bert", "quantizer.start_step=-1"],
        "quantizer.start_step=-1 is out of range: must be an integer step >= 0",
    ),
    "end before start (steps)": (
        ["pruner=magnitude", "pruner.start_step=50", "pruner.end_step=10"],
        "pruner.end_step=10 is out of range: must be >= pruner.start_step=50",
    ),
    "end before start (fractions)": (
        ["pruner=magnitude", "pruner.start_step=0.6", "pruner.end_step=0.2"],
        "pruner.end_step=0.2 is out of range: must be >= pruner.start_step=0.6",
    ),
    "update_frequency 0": (
        ["pruner=magnitude", "pruner.update_frequency=0"],
        "pruner.update_frequency=0 is out of range: must be an int step >= 1 or a fraction > 0",
    ),
    "negative update_frequency": (
        ["pruner=movement", "pruner.update_frequency=-2"],
        "pruner.update_frequency=-2 is out",
    ),
    "pattern 3:2": (["pruner=magnitude", "pruner.pattern=3:2"], f"pruner.pattern=3:2 {PATTERN_ALLOWED}"),
    "pattern 0x4": (["pruner=magnitude", "pruner.pattern=0x4"], f"pruner.pattern=0x4 {PATTERN_ALLOWED}"),
    "pattern axb": (["pruner=magnitude", "pruner.pattern=axb"], f"pruner.pattern=axb {PATTERN_ALLOWED}"),
    "unknown criterion": (
        ["pruner=magnitude", "pruner.criterion=taylor"],
        "pruner.criterion=taylor is unknown: must be one of ['magnitude', 'gradient', 'snip', 'snip_momentum', "
        "'movement']",
    ),
    "snip oneshot at step 0": (
        ["pruner=snip", "pruner.start_step=0", "pruner.end_step=0"],
        "pruner.start_step=0 prunes before any gradient: must be >= 1 (or a fraction of the run) with "
        "pruner.criterion=snip",
    ),
    "gradient at step 0": (["pruner=gradient", "pruner.start_step=0"], "with pruner.criterion=gradient, which scores"),
    "movement iterative from step 0": (
        ["pruner=movement", "pruner.start_step=0", "pruner.end_step=20"],
        "pruner.start_step=0 prunes before any gradient",
    ),
    "snip_momentum in a group at step 0": (
        ["pruner=magnitude", "+pruner.groups=[{criterion:snip_momentum,start_step:0,end_step:1}]"],
        "pruner.groups[0].start_step=0 prunes before any gradient",
    ),
    "schedule beyond max_steps": (
        ["trainer=smoke", "pruner=magnitude", "pruner.end_step=10"],
        "pruner.end_step=10 is beyond the run: must resolve to a step <= 3, the run's 3 optimizer steps "
        "(trainer.max_steps=3)",
    ),
    "quantizer starts after the run": (
        ["trainer=smoke", "quantizer=q8bert", "quantizer.start_step=5"],
        "quantizer.start_step=5 is beyond the run: must be <= 3, the run's optimizer steps (trainer.max_steps=3)",
    ),
    "QAT on a pruned model without pattern_lock": (
        ["model=from_run", "model.folder={pruned_run}", "quantizer=q8bert"],
        "pruner=none does not keep the pruned zeros: must be pattern_lock when quantizer=q8bert trains the pruned "
        "model",
    ),
    "QAT + magnitude on a pruned model": (
        ["model=from_run", "model.folder={pruned_run}", "quantizer=differentiable", "pruner=magnitude"],
        "pruner=magnitude does not keep the pruned zeros: must be pattern_lock when quantizer=differentiable",
    ),
    "from_run without a folder": (["model=from_run"], "model.folder=??? is missing: must be set"),
    "negative seed": (["seed=-1"], "seed=-1 is out of range: must be an integer >= 0"),
    "zero grad_accum_steps": (["trainer.grad_accum_steps=0"], "trainer.grad_accum_steps=0 is out of range"),
    "kd loss unknown": (
        ["distiller=logits", "distiller.kd_loss=js"],
        "distiller.kd_loss=js is unknown: must be one of ['kl', 'mse']",
    ),
    "multilayer match loss": (
        ["distiller=multilayer", "distiller.matches=[{feature:hidden,loss:kl,teacher_layer:1,student_layer:0}]"],
        "distiller.matches[0].loss=kl is unknown: must be one of ['mse', 'cosine'] for feature hidden",
    ),
}

# checks that need the model: they fail at attach, before the first optimizer step (digits + the tiny CNN)
ATTACH_TIME = {
    "pruner include matches nothing": (
        ["pruner=magnitude", "pruner.include=[attention]"],
        "pruner.include=[attention] matches no layer: must select at least one Linear/Conv2d layer of this ConvNet",
    ),
    "pruner exclude leaves nothing": (
        ["pruner=magnitude", "pruner.exclude=[.]"],
        "pruner.exclude=[.] matches no layer",
    ),
    "quantizer include matches nothing": (
        ["quantizer=q8bert", "quantizer.include=[query]"],
        "quantizer.include=[query] matches no layer: must select at least one Linear layer of this ConvNet",
    ),
    "pattern_lock selects nothing": (
        ["pruner=pattern_lock", "pruner.include=[nothere]"],
        "pruner.include=[nothere] matches no layer",
    ),
    "N:M on 9 input columns": (
        ["pruner=magnitude", "pruner.pattern=2:4"],
        "pruner.pattern=2:4 does not fit layer 'features.0': must divide every selected layer (9 input columns are "
        "not divisible by M=4",
    ),
    "NxM on 32 output rows": (
        ["pruner=magnitude", "pruner.pattern=3x1"],
        "pruner.pattern=3x1 does not fit layer 'features.0': must divide every selected layer (shape (32, 9)",
    ),
    "head pattern on a CNN": (
        ["pruner=magnitude", "pruner.pattern=head"],
        "pruner.pattern=head finds no attention block in this ConvNet",
    ),
    "distiller match names a missing student layer": (
        [
            "distiller=multilayer",
            *CNN_TEACHER,
            "distiller.matches=[{teacher_layer:features.0,student_layer:features.9,feature:hidden}]",
        ],
        "distiller.matches[0].student_layer=features.9 is not a layer: must name a module of this ConvNet",
    ),
    "distiller match block index on a CNN teacher": (
        ["distiller=multilayer", *CNN_TEACHER, "distiller.matches=[{teacher_layer:3,student_layer:fc,feature:hidden}]"],
        "distiller.matches[0].teacher_layer=3 is out of range: must be a module name of this ConvNet",
    ),
    "distiller widths differ without projection": (
        [
            "distiller=multilayer",
            *CNN_TEACHER,
            "distiller.projection=false",
            "distiller.matches=[{teacher_layer:fc,student_layer:fc,feature:hidden}]",
        ],
        "distiller.matches[0]={teacher_layer: fc, student_layer: fc} pairs a student (128,) with a teacher (256,) "
        "feature: must pair hidden features of one shape, or set distiller.projection=true",
    ),
    "teacher with another label set": (
        [
            "distiller=logits",
            "model@distiller.teachers.main.model=from_run",
            "distiller.teachers.main.model.folder={three_label_run}",
            "distiller.teachers.main.finetune=null",
        ],
        "distiller.teachers.main.model.folder={three_label_run} has another label set: must hold a model with this "
        "task's 10 labels; it holds 3 labels",
    ),
}


@pytest.fixture
def run_folders(tmp_path) -> dict[str, str]:
    """`pruned_run`: a finished run whose results say it was pruned; `three_label_run`: a CNN with 3 labels."""
    pruned = tmp_path / "pruned_run"
    pruned.mkdir()
    compression = {"sparsity": 0.5, "pattern": "1x1", "bits": 32}
    (pruned / artifacts.RESULTS).write_text(json.dumps({"status": "completed", "compression": compression}))
    cnn = OmegaConf.create({"_target_": "compress_sweeps.models.ConvNet", "channels": [4], "hidden": 8})
    three = save_model(ConvNet(3, channels=[4], hidden=8), tmp_path / "three_label_run", None, cnn, 3).parent
    return {"pruned_run": str(pruned), "three_label_run": str(three)}


def filled(items: list[str] | str, folders: dict[str, str]) -> list[str] | str:
    if isinstance(items, list):
        return [filled(item, folders) for item in items]
    for name, folder in folders.items():
        items = items.replace(f"{{{name}}}", folder)
    return items


def test_the_table_is_big_and_distinct():
    rows = {**CONFIG_TIME, **ATTACH_TIME}
    assert len(rows) >= 25
    assert len({tuple(overrides) for overrides, _ in rows.values()}) == len(rows)
    assert len({message for _, message in rows.values()}) == len(rows)


@pytest.mark.parametrize(("overrides", "message"), list(CONFIG_TIME.values()), ids=list(CONFIG_TIME))
def test_bad_input_fails_in_check_config(overrides, message, run_folders):
    cfg = compose_cfg(filled(overrides, run_folders))
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    assert filled(message, run_folders) in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("overrides", "message"), list(ATTACH_TIME.values()), ids=list(ATTACH_TIME))
def test_model_dependent_bad_input_fails_at_attach(tmp_path, overrides, message, run_folders):
    cfg = compose_cfg([*CNN, *filled(overrides, run_folders)], output_dir=tmp_path / "run")
    check_config(cfg)  # nothing wrong that the config alone shows
    with pytest.raises(Exception) as caught:
        train.run(cfg)
    error = config_error(caught.value)
    assert error is not None, f"not a ConfigError: {caught.value!r}"
    assert filled(message, run_folders) in str(error) and "\n" not in str(error)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "train/loss" not in results["metrics"]


def test_schedule_steps_count_epochs_and_gradient_accumulation():
    # 1000 examples / batch 10 = 100 micro-batches per epoch = 25 optimizer steps with 4 micro-batches per step
    epochs = ["trainer.max_steps=null", "trainer.epochs=1", "trainer.batch_size=10", "pruner=magnitude"]
    check_config(compose_cfg([*epochs, "pruner.end_step=40", "trainer.grad_accum_steps=1"]), train_size=1000)
    check_config(compose_cfg([*epochs, "pruner.end_step=40", "trainer.grad_accum_steps=4"]))  # size unknown yet
    with pytest.raises(ConfigError, match=r"must resolve to a step <= 25, the run's 25 optimizer steps \(trainer"):
        check_config(compose_cfg([*epochs, "pruner.end_step=40", "trainer.grad_accum_steps=4"]), train_size=1000)
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
        ("pruner.pattern=3:2", f"error: pruner.pattern=3:2 {PATTERN_ALLOWED}"),
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
