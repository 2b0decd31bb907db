"""Every conf/**/*.yaml composes into the train config, and every `_target_` instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CONF, compose_cfg, write_local_glue
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from compress_sweeps import kinds
from compress_sweeps.hooks import Compressor
from compress_sweeps.run.build import build, check

GROUPS = [
    "task",
    "model",
    "pruner",
    "pruner/criterion",
    "pruner/method",
    "quantizer",
    "distiller",
    "export",
    "trainer",
    "logger",
]
GROUPS += ["experiment"]
OPTIONS = sorted((group, path.stem) for group in GROUPS for path in (CONF / group).glob("*.yaml"))


def test_every_yaml_is_covered():
    on_disk = {p.relative_to(CONF) for p in CONF.rglob("*.yaml")}
    covered = {Path(g) / f"{o}.yaml" for g, o in OPTIONS} | {Path("train.yaml")}
    covered |= {p.relative_to(CONF) for p in (CONF / "hydra" / "launcher").glob("*.yaml")}  # test_sweeps.py
    covered |= {p.relative_to(CONF) for p in (CONF / "hydra" / "sweeper").glob("*.yaml")}  # test_sweeps.py
    covered |= {p.relative_to(CONF) for p in (CONF / "recipe").glob("*.yaml")}  # test_results_table.py
    covered |= {p.relative_to(CONF) for p in (CONF / "pruner" / "shared").glob("*.yaml")}  # parts of the options
    assert on_disk == covered, f"configs outside the known groups: {on_disk - covered}"


def digits_run(tmp_path: Path) -> Path:
    """A finished smoke run (digits, cnn) to start from."""
    from compress_sweeps import train

    folder = tmp_path / "dense_run"
    train.run(compose_cfg(["task=digits", "model=cnn", "trainer=smoke", "logger=none"], output_dir=folder))
    return folder


IMAGE = {("task", "digits"), ("task", "mnist5k"), ("model", "cnn"), ("model", "cnn_student"), ("model", "cnn_teacher")}
IMAGE |= {("model", "from_run")}  # the digits run below


LM = {("task", "lm_text"), ("model", "hf_causal"), ("model", "smollm2")}  # next-token task and causal LMs


def required_overrides(
    group: str, option: str, tiny_bert: Path, text_csvs, tmp_path: Path, tiny_llama: Path | None = None
) -> list[str]:
    """What a config needs from the user (`???` values), its partner of the same inputs (an image task needs an
    image model and the other way round), or what keeps it off the network in a test."""
    needs = []
    if (group, option) in IMAGE:
        needs.append("task=digits" if group == "model" else "model=cnn")
    if (group, option) == ("distiller", "polino_cnn"):  # a CNN teacher: the student and the task take images too
        needs += ["task=digits", "model=cnn_student"]
    if (group, option) == ("distiller", "dense_cnn"):  # the dense CNN as the teacher of a CNN on images
        needs += ["task=digits", "model=cnn"]
    if (group, option) in LM:
        needs.append("task=lm_text" if group == "model" else "model=hf_causal")
    if (group, option) in {("task", "lm_text"), ("model", "hf_causal")}:
        needs.append(f"model.name_or_path={tiny_llama}")
    if (group, option) == ("task", "glue"):
        needs.append(f"task.path={write_local_glue(tmp_path / 'glue')}")
    if (group, option) == ("task", "text_files"):
        needs += [f"task.train_file={text_csvs[0]}", f"task.validation_file={text_csvs[1]}"]
    if (group, option) == ("model", "hf"):
        needs.append(f"model.name_or_path={tiny_bert}")
    if (group, option) == ("model", "from_run"):
        needs.append(f"model.folder={digits_run(tmp_path)}")
    if (group, option) == ("model", "finetuned"):  # the tiny BERT fine-tuned for 3 steps on the CSV task, cached
        needs += ["task=text_files", f"task.train_file={text_csvs[0]}", f"task.validation_file={text_csvs[1]}"]
        needs += ["task.max_length=16", "model@model.model=hf", f"model.model.name_or_path={tiny_bert}"]
        needs.append("trainer@model.finetune=smoke")
    if (group, option) == ("model", "minilm_student"):
        needs += [f"model.teacher={tiny_bert}", "model.num_layers=1"]
    return needs


SUBGROUPS = {"pruner/criterion": "pruner=base", "pruner/method": "pruner=oneshot_magnitude"}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_config_composes_builds_and_instantiates(group, option, tiny_bert, tiny_llama, text_csvs, tmp_path):
    """Each option composes; the run's parts build and pass the pre-launch checks; the option's own `_target_`
    instantiates (models with a label count; model=smollm2's one-time conversion of the 135M model is
    tests/test_smollm2.py's, a slow test)."""
    overrides = [f"{group}={option}", *required_overrides(group, option, tiny_bert, text_csvs, tmp_path, tiny_llama)]
    if group in SUBGROUPS:
        overrides.insert(0, SUBGROUPS[group])
    cfg = compose_cfg(overrides, output_dir=tmp_path)
    parts = build(cfg)
    check(parts, cfg)
    if group in ("pruner", "quantizer", "distiller", *SUBGROUPS):
        node = cfg.pruner if group in SUBGROUPS else cfg[group]
        assert [type(m).__name__ for m in parts.compressors.members] == (
            [] if node._target_.endswith("Passthrough") else [node._target_.rsplit(".", 1)[-1]]
        )
    elif group in ("task", "model"):
        assert kinds.declaration(cfg[group]) is not None, "its builder declares no kind (compress_sweeps.kinds)"
        kwargs = {"num_labels": 10 if option == "from_run" else 3} if group == "model" else {}
        if (group, option) != ("model", "smollm2"):
            instantiate(cfg[group], **kwargs)


def test_primary_defaults_are_the_offline_text_run(tmp_path):
    cfg = compose_cfg([], output_dir=tmp_path, keep_hydra=True)
    choices = cfg.hydra.runtime.choices
    assert (choices.task, choices.model, choices.pruner, choices.quantizer, choices.distiller) == (
        "bbc_news",
        "minilm",
        "none",
        "none",
        "none",
    )
    assert (choices.trainer, choices.logger) == ("default", "wandb")


@pytest.mark.parametrize("override", ["trainer.max_stpes=3", "pruner=nope", "task.nope=1"])
def test_typos_fail_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_cfg([override])


@pytest.mark.parametrize(
    ("kd", "baseline"),
    [
        (["experiment=kd_minilm", "distiller.temperature=2"], ["experiment=kd_minilm", "distiller=none"]),
        (["experiment=polino_cnn"], ["experiment=polino_cnn", "distiller=none"]),
        (["experiment=polino_quantized_distillation"], ["experiment=polino_quantized_distillation", "distiller=none"]),
        (["experiment=slim_minilm"], ["experiment=slim_minilm", "distiller=none"]),
        (["experiment=slim_cnn"], ["experiment=slim_cnn", "distiller=none"]),
    ],
    ids=["kd_minilm", "polino_cnn", "polino_quantized_distillation", "slim_minilm", "slim_cnn"],
)
def test_kd_experiment_baseline_shares_everything_but_the_kd_term(kd, baseline, tmp_path):
    """The no-KD baseline named in each KD experiment's header composes with the same task, student and trainer."""
    with_kd, without = compose_cfg(kd, output_dir=tmp_path), compose_cfg(baseline, output_dir=tmp_path)
    for key in ("task", "model", "trainer", "pruner", "quantizer", "seed"):
        assert with_kd[key] == without[key], key
    assert with_kd.distiller.get("alpha_kd", with_kd.distiller.get("matches")), "no KD term"
    assert without.distiller._target_ == "compress_sweeps.hooks.Passthrough"
    assert isinstance(instantiate(without.distiller), Compressor)  # no KD-only keys left on the passthrough
