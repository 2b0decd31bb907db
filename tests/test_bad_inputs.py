"""Checks before any training: each bad input fails with one message naming the key, the value and what is allowed.

These rows fail in `build`/`check` (no data, no model). The model-dependent ones, which fail when the compressors
attach: test_bad_inputs_attach.py; your own text files: test_bad_text_files.py; the command line and file-system
cases: test_bad_inputs_cli.py.
"""

from __future__ import annotations

import pytest
from bad_input_checks import (
    CNN_DIGITS,
    RANGE,
    TYPE,
    UNKNOWN,
    assert_names,
    check_config,
    filled,
)
from helpers import compose_cfg

from compress_sweeps.errors import ConfigError

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
    "one-shot method as a value": (["pruner=sparsegpt", "pruner.method=obs"], "pruner.method", "obs", TYPE),
    "sparsegpt damping": (["pruner=sparsegpt", "pruner.method.damping=1.5"], "pruner.method.damping", 1.5, RANGE),
    "one-shot block score": (["pruner=wanda", "pruner.block_reduce=avg"], "pruner.block_reduce", "avg", UNKNOWN),
    "two weight shadows": (["pruner=neural_wiring", "quantizer=q8bert"], "quantizer", "q8bert", "conflicts with"),
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
    "latency objective of an untimed run": (
        ["measure_latency=false", "optimized_metric=compression/latency_ratio"],
        "optimized_metric",
        "compression/latency_ratio",
        "is not measured",
    ),
    "measure_latency in words": (["measure_latency=sometimes"], "measure_latency", "sometimes", TYPE),
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


@pytest.mark.parametrize(("overrides", "key", "value", "problem"), list(CONFIG_TIME.values()), ids=list(CONFIG_TIME))
def test_bad_input_fails_before_anything_loads(overrides, key, value, problem, run_folders):
    cfg = compose_cfg(filled(overrides, run_folders))
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    assert_names(caught.value, key, filled(value, run_folders), problem)


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
