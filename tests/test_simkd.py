"""SimKD: the feature loss equals a hand computation, only the projector and the student train (the reused teacher
head stays frozen), widths may differ, and a run's saved model (projector + reused head) reloads with model=from_run
to the same predictions."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from helpers import compose_cfg, tiny_text_overrides
from omegaconf import OmegaConf
from safetensors.torch import load_file

from compress_sweeps import train
from compress_sweeps.distillers import SimKD, Teacher
from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.models import ConvNet, from_run
from compress_sweeps.run.build import build, check

CONTEXT = RunContext(total_steps=3, num_labels=3, device=torch.device("cpu"), input_keys=("pixel_values",))


def attached(projector: str = "linear", **kwargs) -> tuple[SimKD, ConvNet]:
    """A 6-wide CNN student attached to SimKD with a 10-wide CNN teacher (no fine-tuning, no cache)."""
    torch.manual_seed(0)
    teacher = Teacher(partial(ConvNet, channels=[8], hidden=10))
    distiller = SimKD(teacher, projector=projector, cache_teacher=False, **kwargs)
    student = ConvNet(3, channels=[4], hidden=6)
    distiller.attach(student, CONTEXT)
    return distiller, student


def features(net: ConvNet, pixels: torch.Tensor) -> torch.Tensor:
    """The CNN's final features: the input of its classifier (no dropout in eval mode)."""
    return net.fc(net.pool(net.features(pixels)).flatten(1)).relu()


def test_loss_and_prediction_equal_hand_computation():
    distiller, student = attached(alpha_kd=2.0, alpha_student=0.5)
    student.eval()
    batch = {"pixel_values": torch.randn(5, 1, 8, 8), "labels": torch.tensor([0, 1, 2, 0, 1])}
    logits = student(pixel_values=batch["pixel_values"])
    task = torch.nn.functional.cross_entropy(logits, batch["labels"])
    loss = distiller.loss(logits, batch, task)

    teacher = distiller.teachers.teachers["teacher"].module
    with torch.no_grad():
        target = features(teacher, batch["pixel_values"])  # [5, 10]: the teacher classifier's input
        projector = student.classifier.projector  # Linear(6 -> 10): the width mismatch
        projected = features(student, batch["pixel_values"]) @ projector.weight.T + projector.bias
        mse = ((projected - target) ** 2).sum() / projected.numel()
        assert float(loss) == pytest.approx(0.5 * float(task) + 2.0 * float(mse), rel=1e-5)
        # the prediction is the teacher's classifier on the projected student features
        expected = projected @ teacher.classifier.weight.T + teacher.classifier.bias
        assert torch.allclose(logits, expected, atol=1e-6)
    assert distiller.metrics()["kd/loss"] == pytest.approx(float(mse), rel=1e-5)


@pytest.mark.parametrize("projector", ["linear", "mlp"])
def test_only_the_projector_and_student_get_gradients(projector):
    distiller, student = attached(projector)
    head = student.classifier.head
    teacher_head = distiller.teachers.teachers["teacher"].module.classifier
    assert torch.equal(head.weight, teacher_head.weight) and head.weight is not teacher_head.weight  # a copy
    batch = {"pixel_values": torch.randn(4, 1, 8, 8), "labels": torch.tensor([0, 1, 2, 0])}
    outputs = student(pixel_values=batch["pixel_values"])
    distiller.loss(outputs, batch, torch.nn.functional.cross_entropy(outputs, batch["labels"])).backward()
    assert all(p.grad is None and not p.requires_grad for p in head.parameters())  # frozen, so no optimizer step
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.classifier.projector.parameters())
    assert student.fc.weight.grad.abs().sum() > 0  # the student encoder learns from the feature loss
    assert all(p.grad is None for p in distiller.teachers.teachers["teacher"].module.parameters())
    trained = {n for n, p in student.named_parameters() if p.requires_grad}  # what the trainer's optimizer gets
    assert {n for n in trained if n.startswith("classifier.")} == {
        f"classifier.projector.{n}" for n, _ in student.classifier.projector.named_parameters()
    }
    model = distiller.finalize(student)
    assert model is student and distiller.teachers.teachers["teacher"].module is None


def test_the_projector_maps_any_width_and_the_mlp_has_a_bottleneck():
    _, student = attached("mlp", hidden_factor=5)
    first, _, last = student.classifier.projector
    assert (first.in_features, first.out_features, last.out_features) == (6, 2, 10)  # 10 // 5 hidden units


def assert_reloads(run: str, reload: str, overrides: list[str]) -> dict:
    """The run's saved model, rebuilt by model=from_run and only evaluated, scores exactly as the run did."""
    saved = OmegaConf.load(f"{run}/model_config.yaml")
    assert saved._target_ == "compress_sweeps.distillers.simkd.with_reused_head"
    results = json.loads(Path(run, "results.json").read_text())
    assert results["status"] == "completed" and results["verified"]["ok"]
    assert results["compression"]["spec"][0]["method"] == "SimKD"
    train.run(compose_cfg([*overrides, "model=from_run", f"model.folder={run}", "trainer=none"], output_dir=reload))
    again = json.loads(Path(reload, "results.json").read_text())
    for key in ("eval/loss", "eval/accuracy"):
        assert again["metrics"][key] == pytest.approx(results["metrics"][key], rel=1e-6, abs=1e-7)
    assert again["compression"]["total_params"] == results["compression"]["total_params"]
    return results


def test_a_digits_run_saves_the_projector_and_head_and_reloads_with_from_run(tmp_path):
    task = ["task=digits", "logger=none", "trainer.progress=false", "measure_latency=false"]
    overrides = [*task, "model=cnn_student", "trainer=smoke", "trainer.eval_max_batches=null", "distiller=simkd"]
    overrides += ["model@distiller.teacher.model=cnn", "distiller.teacher.finetune.max_steps=3"]
    overrides += ["distiller.teacher.finetune.progress=false"]
    train.run(compose_cfg(overrides, output_dir=tmp_path / "run"))
    results = assert_reloads(str(tmp_path / "run"), str(tmp_path / "reload"), task)
    assert {"kd/loss", "kd/task_loss", "kd/teacher_accuracy"} <= set(results["metrics"])
    weights = load_file(tmp_path / "run" / "model.safetensors")
    # cnn_student (hidden 64) -> cnn teacher (hidden 128): a 64 -> 128 projector, and the teacher's head unchanged
    assert weights["classifier.projector.weight"].shape == (128, 64) and "classifier.weight" not in weights
    [teacher_folder] = (tmp_path / "cache" / "finetuned").iterdir()
    teacher = load_file(teacher_folder / "model.safetensors")
    assert torch.equal(weights["classifier.head.weight"], teacher["classifier.weight"])  # frozen through training
    model = from_run(str(tmp_path / "run"), 10)
    assert results["compression"]["total_params"] == sum(p.numel() for p in model.parameters())  # projector counted
    assert not any(p.requires_grad for p in model.classifier.head.parameters())
    # the saved config declares the student's kind: the folder of an image model is refused for a text task
    cfg = compose_cfg(["model=from_run", f"model.folder={tmp_path / 'run'}"], output_dir=tmp_path / "text")
    with pytest.raises(ConfigError, match="takes images") as error:
        check(build(cfg), cfg)
    assert error.value.key == "model"


def test_a_text_run_reloads_with_from_run(tmp_path, tiny_bert, text_csvs):
    task = [
        *tiny_text_overrides(text_csvs, tiny_bert)[:4],
        "logger=none",
        "trainer.progress=false",
        "measure_latency=false",
    ]
    overrides = [
        *task,
        "model=hf",
        f"model.name_or_path={tiny_bert}",
        "trainer=smoke",
        "trainer.eval_max_batches=null",
        "distiller=simkd",
    ]
    overrides += ["model@distiller.teacher.model=hf", f"distiller.teacher.model.name_or_path={tiny_bert}"]
    overrides += ["distiller.teacher.finetune=null", "distiller.projector=mlp"]
    train.run(compose_cfg(overrides, output_dir=tmp_path / "run"))
    results = assert_reloads(str(tmp_path / "run"), str(tmp_path / "reload"), task)
    assert results["compression"]["hf_from_pretrained"] is False  # config.json alone cannot rebuild the reused head


@pytest.mark.parametrize(
    ("arguments", "key"),
    [
        ({"alpha_kd": 0.0}, "distiller.alpha_kd"),
        ({"alpha_student": -1.0}, "distiller.alpha_student"),
        ({"projector": "conv"}, "distiller.projector"),
        ({"hidden_factor": 0}, "distiller.hidden_factor"),
        ({"head": ""}, "distiller.head"),
    ],
)
def test_bad_values_name_their_key(arguments, key):
    with pytest.raises(ConfigError) as error:
        SimKD(Teacher(partial(ConvNet, channels=[4], hidden=6)), **arguments)
    assert error.value.key == key


@pytest.mark.parametrize(("override", "key"), [("distiller.projector=conv", "distiller.projector")])
def test_bad_values_are_refused_before_the_run(override, key, tmp_path):
    with pytest.raises(ConfigError) as error:
        build(compose_cfg(["model=minilm_student", "distiller=simkd", override], output_dir=tmp_path))
    assert error.value.key == key


def test_a_head_that_is_not_linear_is_refused_at_attach():
    distiller = SimKD(Teacher(partial(ConvNet, channels=[4], hidden=6)), head="fc.missing", cache_teacher=False)
    with pytest.raises(ConfigError, match="is no linear head of the student") as error:
        distiller.attach(ConvNet(3, channels=[4], hidden=6), CONTEXT)
    assert error.value.key == "distiller.head"
