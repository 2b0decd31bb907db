"""The compressors inside `transformers.Trainer.train()` through `CompressionCallback`, on the tiny BERT: exact
sparsity and pattern from the weights, q8bert levels, the KD term in the Trainer's loss, and the example script."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import datasets
import pytest
import torch
from helpers import TOPICS, text_rows
from transformers import AutoTokenizer, Trainer, TrainingArguments, set_seed

from compress_sweeps.distillers import LogitsDistiller, Teacher
from compress_sweeps.integrations import CompressionCallback
from compress_sweeps.models import pretrained_classifier
from compress_sweeps.pruners import Pruner
from compress_sweeps.pruners.criteria import SnipMomentum
from compress_sweeps.quantizers import Q8Bert
from compress_sweeps.run import measure
from compress_sweeps.weights.patterns import pattern_holds

pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate (a project dependency)")


@pytest.fixture(scope="module")
def tiny_set(tiny_bert) -> datasets.Dataset:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    rows = text_rows(48)
    data = datasets.Dataset.from_dict(
        {"text": [r["text"] for r in rows], "labels": [TOPICS.index(r["label"]) for r in rows]}
    )
    encode = partial(tokenizer, truncation=True, max_length=16, padding="max_length")
    data = data.map(lambda batch: encode(batch["text"]), batched=True, remove_columns=["text"])
    return data.with_format("torch")


def fit(tmp_path: Path, tiny_bert: Path, data, *compressors, **training) -> tuple[torch.nn.Module, Trainer]:
    """Trainer.train() on the tiny BERT with the callback; the model comes back finalized."""
    set_seed(0)
    model = pretrained_classifier(str(tiny_bert), len(TOPICS))
    callback = CompressionCallback(*compressors)
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        **({"max_steps": 10, "logging_steps": 5} | training),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        compute_loss_func=callback.compute_loss,
        callbacks=[callback],
    )
    trainer.train()
    assert callback.model is model
    return model, trainer


@pytest.mark.parametrize(("pattern", "accumulate"), [("2:4", 2), ("4x1", 1)])
def test_snip_momentum_reaches_the_exact_target_and_pattern_under_trainer(
    tmp_path, tiny_bert, tiny_set, pattern, accumulate
):
    pruner = Pruner(criterion=SnipMomentum, target_sparsity=0.5, pattern=pattern)
    model, trainer = fit(tmp_path, tiny_bert, tiny_set, pruner, gradient_accumulation_steps=accumulate)
    assert trainer.state.global_step == 10 and pruner.total_steps == 10
    report = measure.compression_report(model, patterns=pruner.spec().patterns)
    assert len(report["layers"]) == 2 * 6 and report["pattern"] == pattern and report["pattern_holds"]
    assert report["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert all(pattern_holds(w, pattern) for w in measure.prunable_weights(model).values())
    assert float((model.classifier.weight == 0).float().mean()) == 0.0
    assert not any(hasattr(m, "weight_mask") for m in model.modules())  # finalize dropped the masks
    logged = [row for row in trainer.state.log_history if "pruner/sparsity" in row]
    assert logged and logged[-1]["pruner/sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_q8bert_finalize_leaves_at_most_2_to_the_bits_levels(tmp_path, tiny_bert, tiny_set):
    bits = 4
    quantizer = Q8Bert(bits=bits)
    model, trainer = fit(tmp_path, tiny_bert, tiny_set, quantizer, max_steps=4, logging_steps=2)
    assert quantizer.layers and not quantizer.handles  # finalize removed the input fake-quant hooks
    for name, layer in quantizer.layers.items():
        assert torch.unique(layer.weight.detach()).numel() <= 2**bits, name
    assert any(row.get("quant/bits") == bits for row in trainer.state.log_history)


def test_logits_distiller_adds_its_term_to_the_trainers_loss(tmp_path, tiny_bert, tiny_set):
    steps = {"max_steps": 2, "logging_steps": 1}
    _, plain = fit(tmp_path / "plain", tiny_bert, tiny_set, **steps)
    teacher = Teacher(partial(pretrained_classifier, str(tiny_bert)), finetune_seed=1)  # another random head
    distiller = LogitsDistiller({"main": teacher}, temperature=2.0, alpha_kd=0.7, alpha_student=0.3)
    _, kd = fit(tmp_path / "kd", tiny_bert, tiny_set, distiller, **steps)
    first_plain, first_kd = plain.state.log_history[0], kd.state.log_history[0]  # step 1: same weights and batch
    assert first_kd["step"] == first_plain["step"] == 1
    assert first_kd["kd/task_loss"] == pytest.approx(first_plain["loss"], rel=1e-5)
    assert first_kd["kd/loss"] > 0 and first_kd["kd/teacher_forward_passes"] >= 1
    expected = 0.3 * first_plain["loss"] + 0.7 * first_kd["kd/loss"]
    assert first_kd["loss"] == pytest.approx(expected, rel=1e-5) and first_kd["loss"] != first_plain["loss"]


def test_a_trainer_without_the_callbacks_loss_fails_loudly(tmp_path, tiny_bert, tiny_set):
    callback = CompressionCallback(Pruner(criterion=SnipMomentum, target_sparsity=0.5, pattern="4x1"))
    args = TrainingArguments(str(tmp_path), max_steps=1, report_to="none", use_cpu=True, save_strategy="no")
    trainer = Trainer(model=pretrained_classifier(str(tiny_bert), 3), args=args, train_dataset=tiny_set)
    trainer.add_callback(callback)
    with pytest.raises(RuntimeError, match="compute_loss_func=callback.compute_loss"):
        trainer.train()
    with pytest.raises(ValueError, match="cache_teacher=false"):
        CompressionCallback(LogitsDistiller({"main": Teacher(partial(pretrained_classifier, "x"))}, cache_teacher=True))


def test_example_script_runs_end_to_end(tmp_path, tiny_bert, capsys):
    from compress_sweeps.examples.hf_trainer import main

    argv = ["--model", str(tiny_bert), "--max-steps", "4", "--batch-size", "4", "--max-length", "16"]
    argv += ["--max-train-examples", "16", "--max-eval-examples", "8", "--output-dir", str(tmp_path / "out")]
    summary = main([*argv, "pruner.pattern=2:4", "quantizer=q8bert", "export=none"])
    assert summary["pattern"] == "2:4" and summary["pattern_holds"] and summary["sparsity"] >= 0.5
    assert summary["bits"] <= 8
    assert "final: sparsity=" in capsys.readouterr().out
