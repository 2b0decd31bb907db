"""Runs with one-shot pruners and zero training steps, end to end: tiny BERT and CNN, untrained heads, resuming."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from helpers import compose_cfg, tiny_text_overrides
from safetensors.torch import load_file

from compress_sweeps import train
from compress_sweeps.errors import ConfigError
from compress_sweeps.weights.patterns import pattern_holds


def run_json(tmp_path, name, overrides) -> dict:
    train.run(compose_cfg([*overrides, "logger=none"], output_dir=tmp_path / name))
    return json.loads((tmp_path / name / "results.json").read_text())


def finetuned_tiny_bert(text_csvs, tiny_bert) -> list[str]:
    """The tiny BERT fine-tuned once (3 smoke steps) on the CSV task and cached: model=finetuned."""
    task = tiny_text_overrides(text_csvs, tiny_bert)[:4]
    return [*task, "model=finetuned", "model@model.model=hf", f"model.model.name_or_path={tiny_bert}",
            "trainer@model.finetune=smoke"]  # fmt: skip


@pytest.mark.parametrize(("method", "pattern"), [("sparsegpt", "2:4"), ("wanda", "1x1")])
def test_zero_step_oneshot_run_on_a_finetuned_tiny_bert(tmp_path, tiny_bert, text_csvs, method, pattern, caplog):
    from compress_sweeps.models import from_run

    overrides = [*finetuned_tiny_bert(text_csvs, tiny_bert), "trainer=none", f"pruner={method}"]
    overrides += [f"pruner.pattern={pattern}", "pruner.calibration_examples=16"]
    with caplog.at_level(logging.INFO):
        results = run_json(tmp_path, "run", overrides)
        again = run_json(tmp_path, "again", [*overrides, "seed=1"])  # another job of the sweep: the same model
    assert "fine-tuning compress_sweeps.models.hf.pretrained_classifier once for 3 steps" in caplog.text
    assert "reusing the fine-tuned model" in caplog.text
    assert len(list((tmp_path / "cache" / "finetuned").iterdir())) == 1
    compression = results["compression"]
    assert results["status"] == again["status"] == "completed" and results["optimizer_steps"] == 0
    assert compression["pattern"] == pattern and compression["pattern_holds"]
    assert compression["sparsity"] == pytest.approx(0.5) and len(compression["layers"]) == 2 * 6
    [spec] = compression["spec"]
    assert spec["method"] == f"OneShotPruner(method={method})" and spec["keeps_zeros"]
    assert spec["sparsity"][0]["target"] == 0.5 and set(spec["sparsity"][0]["patterns"]) == set(compression["layers"])
    weights = load_file(tmp_path / "run" / "model.safetensors")
    for name in compression["layers"]:
        assert pattern_holds(weights[name], pattern), name
    assert results["metrics"]["pruner/calibration_s"] > 0 and results["metrics"]["pruner/prune_s"] > 0
    # the run folder rebuilds from its architecture alone: no task data, no fine-tuning, no cache needed
    rebuilt = from_run(str(tmp_path / "run"), 3)
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in weights.items())


def test_a_never_trained_head_stops_a_zero_step_oneshot_run(tmp_path, tiny_bert, text_csvs):
    overrides = [*tiny_text_overrides(text_csvs, tiny_bert), "trainer=none", "pruner=wanda"]  # a new 3-label head
    with pytest.raises(ConfigError, match="pruner.untrained=error stops a 0-step run: .*classifier.bias"):
        run_json(tmp_path, "run", overrides)
    failed = json.loads((tmp_path / "run" / "results.json").read_text())
    assert failed["status"] == "failed" and "model=finetuned" in failed["error"]
    assert run_json(tmp_path, "allowed", [*overrides, "pruner.untrained=warn"])["status"] == "completed"


def test_zero_step_oneshot_run_on_the_cnn(tmp_path):
    image = ["task=digits", "model=cnn", "trainer=smoke"]
    dense = run_json(tmp_path, "dense", image)
    assert dense["status"] == "completed" and dense["optimizer_steps"] == 3
    oneshot = [f"model.folder={tmp_path / 'dense'}", "pruner=wanda", "pruner.calibration_examples=64"]
    results = run_json(tmp_path, "pruned", ["task=digits", "model=from_run", "trainer=none", *oneshot])
    compression = results["compression"]
    assert results["status"] == "completed" and compression["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert set(compression["layers"]) == {"features.0.weight", "features.4.weight", "fc.weight"}


def test_zero_steps_without_a_compressor_just_evaluates_and_says_the_model_is_untrained(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        results = run_json(tmp_path, "run", ["task=digits", "model=cnn", "trainer=none"])
    assert results["status"] == "completed" and 0.0 <= results["metrics"]["eval/accuracy"] <= 1.0
    assert "trainer.max_steps=0 evaluates the model as built" in caplog.text


def test_untrained_parameters_name_a_new_head_but_not_a_saved_run(tmp_path, tiny_bert, text_csvs):
    from compress_sweeps.models import ConvNet, from_run, pretrained_classifier, untrained_parameters

    assert untrained_parameters(pretrained_classifier(str(tiny_bert), 3)) == ("classifier.bias", "classifier.weight")
    assert untrained_parameters(pretrained_classifier(str(tiny_bert), 2)) == ()  # the saved 2-label head fits
    assert "classifier.weight" in untrained_parameters(ConvNet(10))  # built from scratch: everything
    overrides = [*tiny_text_overrides(text_csvs, tiny_bert), "trainer=smoke"]
    assert run_json(tmp_path, "saved", overrides)["status"] == "completed"
    assert untrained_parameters(from_run(str(tmp_path / "saved"), 3)) == ()  # its head is the saved run's


def test_a_resumed_oneshot_run_restores_the_masks_instead_of_calibrating_again(tmp_path, monkeypatch):
    from compress_sweeps.pruners.oneshot import pruner as oneshot_module
    from compress_sweeps.run.record import RunRecord

    overrides = ["task=digits", "model=cnn", "model.channels=[8,16]", "model.hidden=32", "pruner=sparsegpt",
                 "pruner.calibration_examples=64", "trainer.max_steps=10", "trainer.checkpoint_every=5",
                 "threads=1"]  # fmt: skip
    with monkeypatch.context() as patch:  # a run killed after its last checkpoint, before it completed
        patch.setattr(RunRecord, "complete", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            run_json(tmp_path, "run", overrides)
    assert (tmp_path / "run" / "checkpoint" / "last.pt").is_file()

    def no_calibration(*args, **kwargs):
        raise AssertionError("a resumed run calibrated again")

    with monkeypatch.context() as patch:
        patch.setattr(oneshot_module, "calibrate_sequentially", no_calibration)
        resumed = run_json(tmp_path, "run", overrides)
    clean = run_json(tmp_path, "clean", overrides)
    assert resumed["status"] == clean["status"] == "completed" and resumed["resumed_from_step"] == 10
    assert resumed["metrics"]["pruner/calibration_s"] > 0  # the first attempt's, restored from the checkpoint
    assert resumed["metrics"]["eval/accuracy"] == clean["metrics"]["eval/accuracy"]
    weights = load_file(tmp_path / "run" / "model.safetensors")
    reference = load_file(tmp_path / "clean" / "model.safetensors")
    assert all(torch.equal(weights[k], reference[k]) for k in reference)
