"""Checks before any training: each bad input fails with one message naming the key, the value and what is allowed.

Most rows fail in `build`/`check` (no data, no model); the model-dependent ones fail when the compressors attach to
the tiny CNN, before the first optimizer step. The command line and file-system cases: test_bad_inputs_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CNN_SMOKE, compose_cfg, text_rows, write_csv
from omegaconf import OmegaConf

from compress_sweeps import train
from compress_sweeps.errors import ConfigError, config_error, show
from compress_sweeps.models import ConvNet
from compress_sweeps.models.runs import save_model
from compress_sweeps.run import artifacts
from compress_sweeps.run.build import build, check

CNN = CNN_SMOKE
CNN_TEACHER = ["model@distiller.teacher.model=cnn_teacher", "distiller.teacher.finetune=null"]
RANGE, NO_LAYER, TYPE, UNKNOWN = "is out of range", "matches no layer", "has the wrong type", "is unknown"
CNN_DIGITS = ["task=digits", "model=cnn"]

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
    "schedule in a run without steps": (
        ["pruner=snip_momentum", "trainer=none"],
        "pruner.end_step",
        0.7,
        "is beyond the run",
    ),
    "distillation without steps": (["distiller=logits", "trainer=none"], "trainer.max_steps", 0, "trains nothing"),
    "wanda on whole channels": (["pruner=wanda", "pruner.pattern=channel"], "pruner.pattern", "channel", "does not"),
    "one-shot method unknown": (["pruner=sparsegpt", "pruner.method=obs"], "pruner.method", "obs", UNKNOWN),
    "one-shot calibration on no examples": (
        ["pruner=wanda", "pruner.calibration_examples=0"],
        "pruner.calibration_examples",
        0,
        RANGE,
    ),
    "static int8 calibrator unknown": (
        ["quantizer=ptq_static", "export.calibrate_method=kl"],
        "export.calibrate_method",
        "kl",
        UNKNOWN,
    ),
    "quantizer starts after the run": (
        ["trainer=smoke", "quantizer=q8bert", "quantizer.start_step=5"],
        "quantizer.start_step",
        5,
        "is beyond the run",
    ),
    "QAT on a pruned model without pattern_lock": (
        ["task=digits", "model=from_run", "model.folder={pruned_run}", "quantizer=q8bert"],
        "pruner",
        "none",
        "does not keep the pruned zeros",
    ),
    "QAT + magnitude on a pruned model": (
        ["task=digits", "model=from_run", "model.folder={pruned_run}", "quantizer=differentiable", "pruner=magnitude"],
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
    # types: every key is checked against the annotated signature of its target (schema.py), before anything loads
    "fractional batch size": (["trainer.batch_size=1.5"], "trainer.batch_size", 1.5, TYPE),
    "fractional max_steps": (["trainer.max_steps=2.5"], "trainer.max_steps", 2.5, TYPE),
    "fractional accumulation": (["trainer.grad_accum_steps=2.5"], "trainer.grad_accum_steps", 2.5, TYPE),
    "learning rate in words": (["trainer.lr=abc"], "trainer.lr", "abc", TYPE),
    "progress as a word": (["trainer.progress=maybe"], "trainer.progress", "maybe", TYPE),
    "unknown lr schedule": (["trainer.lr_schedule=step"], "trainer.lr_schedule", "step", "is unknown"),
    "warmup of the whole run": (["trainer.warmup_ratio=1.0"], "trainer.warmup_ratio", 1.0, RANGE),
    "sparsity in words": (["pruner=magnitude", "pruner.target_sparsity=abc"], "pruner.target_sparsity", "abc", TYPE),
    "skip flag as a number": (["pruner=magnitude", "pruner.skip_incompatible=3"], "pruner.skip_incompatible", 3, TYPE),
    "unknown prune domain": (
        ["pruner=magnitude", "pruner.prune_domain=layer"],
        "pruner.prune_domain",
        "layer",
        UNKNOWN,
    ),
    "bits in words": (["quantizer=q8bert", "quantizer.bits=abc"], "quantizer.bits", "abc", TYPE),
    "fractional bits": (["quantizer=q8bert", "quantizer.bits=7.5"], "quantizer.bits", 7.5, TYPE),
    "per-channel as a number": (["quantizer=q8bert", "quantizer.per_channel=2"], "quantizer.per_channel", 2, TYPE),
    "fractional bucket": (
        ["quantizer=quantized_distillation", "quantizer.bucket_size=1.5"],
        "quantizer.bucket_size",
        1.5,
        TYPE,
    ),
    "temperature in words": (["distiller=logits", "distiller.temperature=abc"], "distiller.temperature", "abc", TYPE),
    "kd weight in words": (["distiller=logits", "distiller.alpha_kd=abc"], "distiller.alpha_kd", "abc", TYPE),
    "negative teacher weight": (
        ["distiller=logits", "distiller.teachers.main.weight=-1"],
        "distiller.teachers.main.weight",
        -1,
        RANGE,
    ),
    "teacher trainer type": (
        ["distiller=logits", "distiller.teachers.main.finetune.max_steps=1.5"],
        "distiller.teachers.main.finetune.max_steps",
        1.5,
        TYPE,
    ),
    "export batch in words": (["export=torch", "export.batch_size=abc"], "export.batch_size", "abc", TYPE),
    "unknown wandb mode": (["logger.mode=sometimes"], "logger.mode", "sometimes", UNKNOWN),
    "seed in words": (["seed=abc"], "seed", "abc", TYPE),
    "fractional seed": (["seed=1.5"], "seed", 1.5, TYPE),
    "zero threads": (["threads=0"], "threads", 0, RANGE),
    "unknown key added": (["+trainer.warmup_steps=10"], "trainer.warmup_steps", 10, "is not a setting"),
    # what the run reports to a sweeper must be something it measures: found before training, not after
    "optimized metric misspelled": (["optimized_metric=eval/acc"], "optimized_metric", "eval/acc", "is not measured"),
    "optimized metric not measured": (
        ["optimized_metric=[eval/accuracy,compression/size]"],
        "optimized_metric",
        "compression/size",
        "is not measured",
    ),
    # task values: checked without loading the data
    "validation fraction of 1.5": (
        CNN_DIGITS + ["task.validation_fraction=1.5"],
        "task.validation_fraction",
        1.5,
        RANGE,
    ),
    "validation fraction 0": (["task.validation_fraction=0"], "task.validation_fraction", 0, RANGE),
    "max_length 4": (["task.max_length=4"], "task.max_length", 4, RANGE),
    "zero training examples": (["task.max_train_examples=0"], "task.max_train_examples", 0, RANGE),
    "negative split seed": (["task.split_seed=-1"], "task.split_seed", -1, RANGE),
    "glue regression task": (["task=glue", "task.name=stsb"], "task.name", "stsb", UNKNOWN),
    "glue unknown task": (["task=glue", "task.name=imdb"], "task.name", "imdb", UNKNOWN),
    # model values and combinations
    "image task, text model": (["task=digits", "model=minilm"], "model", "minilm", "takes text"),
    "text task, image model": (["model=cnn"], "model", "cnn", "takes images"),
    "image student, text teacher": (
        ["task=digits", "model=cnn_student", "distiller=logits"],
        "distiller.teachers.main.model",
        "minilm",
        "takes text",
    ),
    "no conv stage": (CNN_DIGITS + ["model.channels=[]"], "model.channels", [], RANGE),
    "zero-width stage": (CNN_DIGITS + ["model.channels=[8,0]"], "model.channels", [8, 0], RANGE),
    "dropout 2": (["model.dropout=2"], "model.dropout", 2, RANGE),
    "student without layers": (["model=minilm_student", "model.num_layers=0"], "model.num_layers", 0, RANGE),
    "hf dropout in words": (["model=hf", "model.dropout=abc"], "model.dropout", "abc", TYPE),
    "from_run on a missing folder": (
        ["model=from_run", "model.folder=/nonexistent/run"],
        "model.folder",
        "/nonexistent/run",
        "does not exist",
    ),
    "from_run on an unverified run": (
        ["model=from_run", "model.folder={unverified_run}"],
        "model.folder",
        "{unverified_run}",
        "holds a unverified run",
    ),
    "teacher from a missing run": (
        ["distiller=logits", "model@distiller.teachers.main.model=from_run", "distiller.teachers.main.model.folder=/x"],
        "distiller.teachers.main.model.folder",
        "/x",
        "does not exist",
    ),
    # paths: the run's folder is Hydra's; the output root and the cache must be writable folders
    "output_dir pointed elsewhere": (
        ["paths.output_dir=/tmp/elsewhere"],
        "paths.output_dir",
        "/tmp/elsewhere",
        "cannot",
    ),
    "output root is a file": (["paths.root={a_file}"], "paths.root", "{a_file}", "is a file"),
    "cache under a file": (
        ["paths.cache_dir={a_file}/cache"],
        "paths.cache_dir",
        "{a_file}/cache",
        "lies under a file",
    ),
}

# your own text files (task=text_files): read and checked before anything loads; `{name}` are files made below
FILES = {
    "missing train file": ({"train_file": "missing.csv"}, "task.train_file", "does not exist"),
    "empty file": ({"train_file": "empty.csv"}, "task.train_file", "is empty"),
    "header only": ({"validation_file": "header_only.csv"}, "task.validation_file", "has no examples"),
    "not UTF-8": ({"train_file": "latin1.csv"}, "task.train_file", "is not UTF-8"),
    "unknown format": (
        {"train_file": "notes.txt", "validation_file": "notes.txt"},
        "task.train_file",
        "is not a known",
    ),
    "formats differ": ({"validation_file": "dev.json"}, "task.validation_file", "differs"),
    "a folder": ({"train_file": "."}, "task.train_file", "is not a known format"),
    "no label column": ({"train_file": "no_label.csv"}, "task.label_column", "is not a column"),
    "no text column": ({"text_columns": "[sentence]"}, "task.text_columns", "is not a column"),
    "three text columns": ({"text_columns": "[a,b,c]"}, "task.text_columns", "is out of range"),
    "unseen validation label": ({"validation_file": "dev_new_label.csv"}, "task.validation_file", "has labels never"),
    "one training label": ({"train_file": "one_label.csv"}, "task.train_file", "has one label only"),
    "label_names short": ({"label_names": "[sport,tech]"}, "task.label_names", "is out of range"),
    "unknown label check": ({"label_check": "lenient"}, "task.label_check", "is unknown"),
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
    "one-shot N:M on 9 input columns": (
        ["pruner=sparsegpt", "pruner.pattern=2:4", "pruner.calibration_examples=8", "trainer.max_steps=2"],
        "pruner.pattern",
        "2:4",
        "does not fit layer 'features.0'",
    ),
    "one-shot pruning of a never-trained CNN at 0 steps": (
        ["pruner=wanda", "trainer=none"],
        "pruner.untrained",
        "error",
        "stops a 0-step run",
    ),
    "quantizer include matches nothing": (
        ["quantizer=q8bert", "quantizer.include=[query]"],
        "quantizer.include",
        ["query"],
        NO_LAYER,
    ),
    "pattern_lock on a dense model": (["pruner=pattern_lock"], "pruner", "pattern_lock", "finds nothing to lock"),
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
    failed.mkdir()
    (failed / artifacts.RESULTS).write_text(json.dumps({"status": "failed", "error": "KeyboardInterrupt: "}))
    unverified = tmp_path / "unverified_run"
    unverified.mkdir()
    verdict = {"status": "completed", "verified": {"ok": False}, "compression": {}}
    (unverified / artifacts.RESULTS).write_text(json.dumps(verdict))
    (tmp_path / "a_file").write_text("not a folder")
    cnn = OmegaConf.create({"_target_": "compress_sweeps.models.ConvNet", "channels": [4], "hidden": 8})
    three = save_model(ConvNet(3, channels=[4], hidden=8), tmp_path / "three_label_run", None, cnn, 3).parent
    save_model(ConvNet(10, channels=[4], hidden=8), pruned, None, cnn, 10)
    compression = {"sparsity": 0.5, "pattern": "1x1", "bits": 32}
    (pruned / artifacts.RESULTS).write_text(json.dumps({"status": "completed", "compression": compression}))
    return {
        "pruned_run": str(pruned),
        "failed_run": str(failed),
        "unverified_run": str(unverified),
        "three_label_run": str(three),
        "a_file": str(tmp_path / "a_file"),
    }


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


@pytest.fixture
def text_data(tmp_path) -> Path:
    """A good train/dev pair and the bad files of FILES."""
    folder = tmp_path / "data"
    folder.mkdir()
    rows = text_rows(12)
    write_csv(folder / "train.csv", rows)
    write_csv(folder / "dev.csv", text_rows(6, seed=1))
    (folder / "empty.csv").write_text("")
    (folder / "header_only.csv").write_text("text,label\n")
    (folder / "latin1.csv").write_bytes("text,label\ncaf\xe9 match,sport\nvote,politics\n".encode("latin-1"))
    (folder / "notes.txt").write_text("match goal\n")
    (folder / "dev.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    write_csv(folder / "no_label.csv", [{"text": row["text"]} for row in rows])
    write_csv(folder / "dev_new_label.csv", [*rows, {"text": "rain and sun", "label": "weather"}])
    write_csv(folder / "one_label.csv", [row for row in rows if row["label"] == "sport"])
    return folder


def text_files_overrides(folder: Path, changes: dict[str, str]) -> list[str]:
    settings = {"train_file": "train.csv", "validation_file": "dev.csv"} | changes
    return ["task=text_files"] + [
        f"task.{key}={folder / value if key.endswith('_file') else value}" for key, value in settings.items()
    ]


@pytest.mark.parametrize(("changes", "key", "problem"), list(FILES.values()), ids=list(FILES))
def test_bad_text_files_fail_before_anything_loads(text_data, changes, key, problem, tmp_path):
    cfg = compose_cfg(text_files_overrides(text_data, changes))
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    error = caught.value
    assert error.key == key and error.problem.startswith(problem), str(error)
    assert "\n" not in str(error)
    assert not (tmp_path / "cache").exists()  # nothing read into a cache, nothing half-written


def test_label_problems_can_be_turned_into_warnings(text_data, caplog):
    cfg = compose_cfg(text_files_overrides(text_data, {"validation_file": "dev_new_label.csv", "label_check": "warn"}))
    with caplog.at_level("WARNING"):
        check_config(cfg)
    assert "has labels never seen in training" in caplog.text


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
    locked = ["task=digits", "model=from_run", f"model.folder={run_folders['pruned_run']}", "quantizer=q8bert"]
    locked.append("pruner=pattern_lock")
    check_config(compose_cfg(locked))
    check_config(compose_cfg(["pruner=magnitude", "pruner.start_step=0", "pruner.end_step=0"]))  # |W| needs no grad
