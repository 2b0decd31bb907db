"""Bad inputs, third pass: values the schema took but the run could not use, combinations that leave a method with
nothing to do, bad rows in your own files, messages that named the wrong thing, and swept keys. Each fails in the
pre-launch pass (no data, no model loaded) with one ConfigError naming the key; from the command line that is one
`error:` line and exit code 2, in a single run as in a sweep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bad_input_checks import BAD_REGEX, CNN_DIGITS, NO_DEVICE, NOT_FINITE, assert_names, check_config, filled
from helpers import CNN_SMOKE, CONF, compose_cfg, text_rows, tiny_text_overrides, write_csv
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from compress_sweeps import train
from compress_sweeps.errors import ConfigError
from compress_sweeps.models import ConvNet
from compress_sweeps.models.runs import from_run, save_model
from compress_sweeps.models.structure import STRUCTURE
from compress_sweeps.run import artifacts
from compress_sweeps.sweeps.precheck import check_swept_keys

NO_OP = "builds no int8 model of"
FINETUNED_CNN = ["task=digits", "model=finetuned", "model@model.model=cnn", "trainer@model.finetune=cnn"]
CNN_TEACHER = [
    "task=digits",
    "model=cnn_student",
    "distiller=logits",
    "model@distiller.teachers.main.model=cnn_teacher",
]

# name: (overrides, key, value, problem); `{name}` are the run folders of conftest's `run_folders` and `slimmed_run`
SCHEMA_TOO_WIDE = {
    # a float that is not a number at all: refused for every float of every signature (schema.STRICT)
    "learning rate inf": (["trainer.lr=inf"], "trainer.lr", float("inf"), NOT_FINITE),
    "learning rate nan": (["trainer.lr=nan"], "trainer.lr", float("nan"), NOT_FINITE),
    "weight decay inf": (["trainer.weight_decay=inf"], "trainer.weight_decay", float("inf"), NOT_FINITE),
    "epochs inf": (["trainer.max_steps=null", "trainer.epochs=inf"], "trainer.epochs", float("inf"), NOT_FINITE),
    "temperature nan": (["distiller=logits", "distiller.temperature=nan"], "distiller.temperature", "nan", NOT_FINITE),
    "kd weight -inf": (["distiller=logits", "distiller.alpha_kd=-inf"], "distiller.alpha_kd", "-inf", NOT_FINITE),
    "sparsity nan": (
        ["pruner=magnitude", "pruner.target_sparsity=nan"],
        "pruner.target_sparsity",
        float("nan"),
        NOT_FINITE,
    ),
    "validation fraction inf": (
        [*CNN_DIGITS, "task.validation_fraction=inf"],
        "task.validation_fraction",
        float("inf"),
        NOT_FINITE,
    ),
    # a device torch does not know, or that cannot hold a model: the schema's `Device` type, with the right key
    "device torch does not know": (["trainer.device=tpu"], "trainer.device", "tpu", NO_DEVICE),
    "device index in words": (["trainer.device=cuda:x"], "trainer.device", "cuda:x", NO_DEVICE),
    "device without storage": (["trainer.device=meta"], "trainer.device", "meta", NO_DEVICE),
    "teacher's fine-tuning device": (
        [*CNN_TEACHER, "distiller.teachers.main.finetune.device=tpu"],
        "distiller.teachers.main.finetune.device",
        "tpu",
        NO_DEVICE,
    ),
    # any paths.* folder: a folder must be creatable there (a virtual file system refuses it, even to root)
    "cache under /proc": (["paths.cache_dir=/proc/cs_cache"], "paths.cache_dir", "/proc/cs_cache", "cannot be created"),
    "output root under /sys": (["paths.root=/sys/cs_outputs"], "paths.root", "/sys/cs_outputs", "cannot be created"),
    "an added path under /proc": (["+paths.data_dir=/proc/cs/data"], "paths.data_dir", "/proc/cs/data", "cannot be"),
    # regexes: each must compile (schema.Regexes), checked before any model exists
    "exclude does not compile": (["pruner=sparsegpt", 'pruner.exclude=["*fc"]'], "pruner.exclude", ["*fc"], BAD_REGEX),
    "repetition beyond re's limit": (
        ["pruner=magnitude", 'pruner.include=["a{99999999999}"]'],
        "pruner.include",
        ["a{99999999999}"],
        BAD_REGEX,
    ),
    "include as one string": (["pruner=magnitude", "pruner.include=features"], "pruner.include", "features", BAD_REGEX),
    "quantizer exclude does not compile": (
        ["quantizer=q8bert", 'quantizer.exclude=["("]'],
        "quantizer.exclude",
        ["("],
        BAD_REGEX,
    ),
    "group include does not compile": (
        ["pruner=magnitude", "pruner.groups=[{include:['fc(']}]"],
        "pruner.groups[0].include",
        ["fc("],
        BAD_REGEX,
    ),
    "slim include does not compile": (["pruner=slim", 'pruner.include=["[a"]'], "pruner.include", ["[a"], BAD_REGEX),
}
if not torch.cuda.is_available():
    SCHEMA_TOO_WIDE["cuda on a machine without it"] = (["trainer.device=cuda"], "trainer.device", "cuda", NO_DEVICE)

NO_OPS = {
    "dynamic int8 without an export": (["quantizer=ptq_dynamic", "export=none"], "export", "none", NO_OP),
    "static int8 without an export": (["quantizer=ptq_static", "export=none"], "export", "none", NO_OP),
    "static int8 with the dynamic export": (
        ["quantizer=ptq_static", "export=onnxruntime"],
        "export",
        "onnxruntime",
        NO_OP,
    ),
    "dynamic int8 with the static export": (
        ["quantizer=ptq_dynamic", "export=onnxruntime_static"],
        "export",
        "onnxruntime_static",
        NO_OP,
    ),
    "fine-tuned for 0 steps": (
        [*FINETUNED_CNN, "model.finetune.max_steps=0"],
        "model.finetune.max_steps",
        0,
        "fine-tunes nothing",
    ),
    "fine-tuned by trainer=none": (
        ["task=digits", "model=finetuned", "model@model.model=cnn", "trainer@model.finetune=none"],
        "model.finetune.max_steps",
        0,
        "fine-tunes nothing",
    ),
    "distillation with no weight": (
        ["distiller=logits", "distiller.alpha_kd=0"],
        "distiller.alpha_kd",
        0,
        "distils nothing",
    ),
    "the only teacher weighs nothing": (
        ["distiller=logits", "distiller.teachers.main.weight=0"],
        "distiller.teachers.main.weight",
        0,
        "distils nothing",
    ),
    "every feature match weighs nothing": (
        ["distiller=multilayer", "distiller.matches=[{teacher_layer:1,student_layer:0,feature:hidden,weight:0}]"],
        "distiller.matches[0].weight",
        0,
        "distils nothing",
    ),
    "teacher fine-tuned for 0 steps": (
        [*CNN_TEACHER, "distiller.teachers.main.finetune.max_steps=0"],
        "distiller.teachers.main.finetune.max_steps",
        0,
        "fine-tunes nothing",
    ),
}

MISLEADING = {
    "local model folder that does not exist": (
        ["model=hf", "model.name_or_path=/nonexistent/bert"],
        "model.name_or_path",
        "/nonexistent/bert",
        "does not exist",
    ),
    "relative model folder that does not exist": (
        ["model=hf", "model.name_or_path=./no_such_bert"],
        "model.name_or_path",
        "./no_such_bert",
        "does not exist",
    ),
    "model path that is a file": (
        ["model=hf", "model.name_or_path={a_file}"],
        "model.name_or_path",
        "{a_file}",
        "is a file",
    ),
    "model folder without config.json": (
        ["model=hf", "model.name_or_path={empty_folder}"],
        "model.name_or_path",
        "{empty_folder}",
        "is not a model folder",
    ),
    "a CNN's run folder as a Hugging Face model": (
        ["model=hf", "model.name_or_path={three_label_run}"],
        "model.name_or_path",
        "{three_label_run}",
        "is not a model folder",
    ),
    "student's teacher folder that does not exist": (
        ["model=minilm_student", "model.teacher=/nonexistent/teacher"],
        "model.teacher",
        "/nonexistent/teacher",
        "does not exist",
    ),
    "slimmed run without its structure file": (
        ["task=digits", "model=from_run", "model.folder={slimmed_run}"],
        "model.folder",
        "{slimmed_run}",
        f"lacks {STRUCTURE}",
    ),
    "teacher from a slimmed run without its structure file": (
        [
            "task=digits",
            "model=cnn",
            "distiller=logits",
            "model@distiller.teachers.main.model=from_run",
            "distiller.teachers.main.model.folder={slimmed_run}",
            "distiller.teachers.main.finetune=null",
        ],
        "distiller.teachers.main.model.folder",
        "{slimmed_run}",
        f"lacks {STRUCTURE}",
    ),
}


def slimmed_cnn(folder: Path, with_results: bool = True) -> Path:
    """A CNN run folder whose first conv kept 3 of its config's 4 channels, its slim_structure.json lost."""
    config = OmegaConf.create({"_target_": "compress_sweeps.models.ConvNet", "channels": [4], "hidden": 8})
    save_model(
        ConvNet(10, channels=[3], hidden=8), folder, None, config, 10, reference=ConvNet(10, channels=[4], hidden=8)
    )
    assert (folder / STRUCTURE).is_file()
    (folder / STRUCTURE).unlink()
    if with_results:
        layers = {"features.0": {"kind": "channels", "kept": 3, "total": 4}}
        results = {"status": "completed", "compression": {"structure": {"layers": layers, "blocks": {}}}}
        (folder / artifacts.RESULTS).write_text(json.dumps(results))
    return folder


@pytest.fixture
def folders(run_folders, tmp_path) -> dict[str, str]:
    (tmp_path / "empty_folder").mkdir()
    return run_folders | {
        "slimmed_run": str(slimmed_cnn(tmp_path / "slimmed_run")),
        "empty_folder": str(tmp_path / "empty_folder"),
    }


CASES = SCHEMA_TOO_WIDE | NO_OPS | MISLEADING


@pytest.mark.parametrize(("overrides", "key", "value", "problem"), list(CASES.values()), ids=list(CASES))
def test_what_the_run_cannot_use_fails_before_anything_loads(overrides, key, value, problem, folders):
    cfg = compose_cfg(filled(overrides, folders))
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    assert_names(caught.value, key, filled(value, folders), problem)


def test_the_post_training_quantizers_pass_with_the_export_they_select():
    for quantizer in ("ptq_dynamic", "ptq_static"):
        assert check_config(compose_cfg([f"quantizer={quantizer}"])) == []
    assert check_config(compose_cfg(["quantizer=ptq_dynamic", "export=torch"])) == []  # torch's dynamic int8 too


def test_a_slimmed_folder_without_its_structure_and_results_says_so_when_it_loads(tmp_path):
    """No results.json to tell before loading (a fine-tuned model's cache folder): the weights' shapes do, and the
    error names the missing file instead of torch's size mismatch."""
    folder = slimmed_cnn(tmp_path / "bare", with_results=False)
    with pytest.raises(ConfigError) as caught:
        from_run(str(folder), 10)
    assert_names(caught.value, "model.folder", str(folder), f"lacks {STRUCTURE}")
    assert "features.0.weight: saved [3, 1, 3, 3], built [4, 1, 3, 3]" in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder whatever its mode")
def test_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    with pytest.raises(ConfigError) as caught:
        check_config(compose_cfg([f"paths.cache_dir={locked}/cache"]))
    assert_names(caught.value, "paths.cache_dir", f"{locked}/cache", "cannot be created")


# your own text files: the pre-launch pass reads the cells it uses and names the file, the column and the first bad row
# name: (bad file, its text, key, problem, first bad row)
ROWS = {
    "empty label cell": (
        "train.csv",
        "text,label\nmatch goal,sport\nvote party,\n",
        "task.train_file",
        "has empty 'label' cells",
        "row 2 (line 3 of the file)",
    ),
    "empty text cell": (
        "dev.csv",
        "text,label\nmatch goal,sport\n,tech\nvote,politics\n",
        "task.validation_file",
        "has empty 'text' cells",
        "row 2 (line 3 of the file)",
    ),
    "blank text cell": (
        "train.csv",
        'text,label\nmatch goal,sport\nvote,politics\n"   ",tech\n',
        "task.train_file",
        "has empty 'text' cells",
        "row 3 (line 4 of the file)",
    ),
    "label read as missing": (
        "train.csv",
        "text,label\nmatch goal,sport\nvote party,NA\n",
        "task.train_file",
        "has empty 'label' cells",
        "row 2 (line 3 of the file)",
    ),
    "null label in JSON Lines": (
        "train.jsonl",
        '{"text": "match goal", "label": "sport"}\n{"text": "vote", "label": null}\n',
        "task.train_file",
        "has empty 'label' cells",
        "row 2 (line 2 of the file)",
    ),
    "header line repeated": (
        "train.csv",
        "text,label\nmatch goal,sport\nvote party,politics\ntext,label\nchip code,tech\n",
        "task.train_file",
        "repeats its header line",
        "row 3 (line 4 of the file)",
    ),
    "header line repeated in validation": (
        "dev.csv",
        "text,label\nmatch goal,sport\ntext,label\n",
        "task.validation_file",
        "repeats its header line",
        "row 2 (line 3 of the file)",
    ),
}


@pytest.mark.parametrize(("name", "text", "key", "problem", "first"), list(ROWS.values()), ids=list(ROWS))
def test_bad_rows_name_the_file_the_column_and_the_first_bad_row(tmp_path, name, text, key, problem, first):
    suffix = Path(name).suffix
    good = {"train": text_rows(12), "dev": text_rows(6, seed=1)}
    for split, rows in good.items():
        if suffix == ".csv":
            write_csv(tmp_path / f"{split}.csv", rows)
        else:
            (tmp_path / f"{split}{suffix}").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / name).write_text(text)
    files = [f"task.train_file={tmp_path / f'train{suffix}'}", f"task.validation_file={tmp_path / f'dev{suffix}'}"]
    with pytest.raises(ConfigError) as caught:
        check_config(compose_cfg(["task=text_files", *files]))
    error = caught.value
    assert (error.key, error.value, error.problem) == (key, str(tmp_path / name), problem), str(error)
    assert f"the first is {first}" in error.allowed and "\n" not in str(error), str(error)


def test_a_validation_file_that_is_the_training_file_is_a_warning(text_csvs, tmp_path):
    train_file, dev_file = text_csvs
    copy = tmp_path / "copy_of_train.csv"
    copy.write_bytes(train_file.read_bytes())
    for validation in (train_file, copy, dev_file):
        files = [f"task.train_file={train_file}", f"task.validation_file={validation}"]
        warnings = check_config(compose_cfg(["task=text_files", *files]))
        expected = [] if validation == dev_file else [f"task.validation_file={validation} is the training file"]
        assert [w.split(f" ({train_file})")[0] for w in warnings] == expected


def test_the_run_logs_the_warning_and_records_it_in_results(text_csvs, tiny_bert, tmp_path, caplog):
    overrides = [*tiny_text_overrides((text_csvs[0], text_csvs[0]), tiny_bert), "trainer=smoke", "logger=none"]
    overrides += ["trainer.progress=false", "measure_latency=false", "trainer.max_steps=1"]
    cfg = compose_cfg(overrides, output_dir=tmp_path / "run")
    with caplog.at_level("WARNING"):
        train.run(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed"
    [warning] = results["warnings"]
    assert warning.startswith(f"task.validation_file={text_csvs[0]} is the training file") and warning in caplog.text


# swept keys: a sweep file's `hydra.sweeper.params` (any sweeper) and the reference sweeper's `grids`
SWEPT = {
    "typo in a grid key": (
        "hydra:\n  sweeper:\n    params:\n      trainer.lrr: 0.1,0.2\n",
        "hydra.sweeper.params.trainer.lrr",
        "0.1,0.2",
        "did you mean trainer.lr?",
    ),
    "typo under a swept option": (
        "defaults:\n  - override /hydra/sweeper: reference\nhydra:\n  sweeper:\n    grids:\n      - pruner: wanda\n"
        "        pruner.calibration_exampels: 8,16\n",
        "hydra.sweeper.grids[0].pruner.calibration_exampels",
        "8,16",
        "did you mean pruner.calibration_examples?",
    ),
    "typo in the reference job": (
        "defaults:\n  - override /hydra/sweeper: reference\nhydra:\n  sweeper:\n    reference: [quantizr=none]\n"
        "    params:\n      seed: 0,1\n",
        "hydra.sweeper.reference[0]",
        "quantizr=none",
        "did you mean quantizer?",
    ),
    "unknown option of a group": (
        "hydra:\n  sweeper:\n    params:\n      pruner: magnitud,snip\n",
        "hydra.sweeper.params.pruner",
        "magnitud,snip",
        "must name options of pruner",
    ),
    "typo in an Optuna search space": (
        "defaults:\n  - override /hydra/sweeper: optuna\nhydra:\n  sweeper:\n    params:\n"
        "      trainer.lrr: interval(0.0005, 0.005)\n",
        "hydra.sweeper.params.trainer.lrr",
        "interval(0.0005, 0.005)",
        "did you mean trainer.lr?",
    ),
}


def swept_keys_checked(tmp_path: Path, text: str) -> None:
    """`text` as a sweep file in a search path of its own, composed as `-m sweep=mine` composes it, keys checked."""
    (tmp_path / "sweep").mkdir(exist_ok=True)
    (tmp_path / "sweep" / "mine.yaml").write_text("# @package _global_\n" + text)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        overrides = ["sweep=mine", f"hydra.searchpath=[file://{tmp_path}]"]
        check_swept_keys(compose("train", overrides=overrides, return_hydra_config=True))


@pytest.mark.parametrize(("text", "key", "value", "allowed"), list(SWEPT.values()), ids=list(SWEPT))
def test_a_bad_swept_key_is_one_line_naming_it(tmp_path, text, key, value, allowed):
    with pytest.raises(ConfigError) as caught:
        swept_keys_checked(tmp_path, text)
    assert (caught.value.key, caught.value.value) == (key, value), str(caught.value)
    assert allowed in str(caught.value) and "\n" not in str(caught.value)


def test_swept_keys_that_a_swept_option_brings_and_every_named_sweep_pass(tmp_path):
    swept_keys_checked(
        tmp_path, "hydra:\n  sweeper:\n    params:\n      pruner: magnitude\n      pruner.pattern: 4x1,2:4\n"
    )
    for sweep in sorted((CONF / "sweep").glob("*.yaml")):
        swept_keys_checked(tmp_path, sweep.read_text().removeprefix("# @package _global_\n"))


# from the command line: one line, exit code 2, nothing written, in a single run as in a sweep
def cli(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "compress_sweeps", *arguments]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=os.environ, timeout=600)


SWEEP_FILE = "# @package _global_\nhydra:\n  sweeper:\n    params:\n      trainer.lrr: 0.1,0.2\n"


@pytest.mark.runs
@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["trainer.device=tpu"], "error: trainer.device=tpu is not a usable device: must be auto | cpu"),
        (["trainer.lr=inf"], "error: trainer.lr=inf is not a finite number: must be a number > 0"),
        (["paths.cache_dir=/proc/cs_cache"], "error: paths.cache_dir=/proc/cs_cache cannot be created"),
        (["quantizer=ptq_dynamic", "export=none"], "error: export=none builds no int8 model of dynamic activations"),
        (["-m", "sweep=mine"], "error: hydra.sweeper.params.trainer.lrr=0.1,0.2 is not a setting"),
    ],
    ids=["device", "inf", "virtual file system", "no-op", "swept key"],
)
def test_the_command_line_gives_one_line_and_exit_code_2_before_anything_exists(tmp_path, arguments, line):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "mine.yaml").write_text(SWEEP_FILE)
    folders = [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep_dir'}"]
    done = cli(tmp_path, *arguments, *CNN_SMOKE, *folders, f"hydra.searchpath=[file://{tmp_path}]")
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output and "UserWarning: Callback" not in output, output
    assert [text for text in done.stderr.splitlines() if text.strip()][-1].startswith(line), output
    assert not any((tmp_path / name).exists() for name in ("run", "sweep_dir", "outputs"))


@pytest.mark.runs
def test_a_sweep_refuses_what_a_single_run_refuses(tmp_path):
    """The same device in a grid: exit code 2 before any job, the point and its error listed."""
    folders = [f"hydra.sweep.dir={tmp_path / 'sweep_dir'}"]
    done = cli(tmp_path, "-m", *CNN_SMOKE, "trainer.device=tpu,cpu", *folders)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sweep not started: 1 of 2 jobs have invalid settings" in done.stderr
    assert "trainer.device=tpu is not a usable device" in done.stderr and not (tmp_path / "sweep_dir").exists()
