"""Distillation end to end on tiny models: experiments compose and run, the teacher is fine-tuned once and its
outputs are computed once across the jobs of a temperature sweep."""

from __future__ import annotations

import json
import math
import re

import pytest
from helpers import compose_cfg, tiny_text_overrides
from safetensors.torch import load_file

from compress_sweeps import train

POLINO_TINY = [
    "experiment=polino_cnn",
    "distiller.teachers.main.model.channels=[8]",
    "distiller.teachers.main.model.convs_per_stage=1",
    "distiller.teachers.main.model.hidden=16",
    "distiller.teachers.main.finetune.max_steps=2",
    "distiller.teachers.main.finetune.batch_size=8",
    "distiller.teachers.main.finetune.progress=false",
    "trainer.max_steps=3",
    "trainer.batch_size=8",
    "trainer.eval_max_batches=2",
    "trainer.progress=false",
    "logger=none",
]


def test_polino_temperature_jobs_share_one_teacher_and_its_cached_logits(tmp_path, caplog):
    caplog.set_level("INFO")
    runs = []
    for job, (temperature, cache) in enumerate([(1, "true"), (4, "true"), (1, "false")]):
        overrides = [*POLINO_TINY, f"distiller.temperature={temperature}", f"distiller.cache_teacher={cache}"]
        train.run(compose_cfg(overrides, output_dir=tmp_path / str(job)))
        results = json.loads((tmp_path / str(job) / "results.json").read_text())
        assert results["status"] == "completed"
        metrics = results["metrics"]
        assert metrics["kd/temperature"] == temperature
        assert {"kd/task_loss", "kd/loss", "kd/loss_main"} <= set(metrics)
        assert metrics["kd/teacher_accuracy"] == (runs or [metrics])[0]["kd/teacher_accuracy"]  # the same every job
        assert 0.1 <= metrics["kd/teacher_confidence"] <= 1.0  # peak of softmax(t/T) over 10 digit classes
        runs.append(metrics)
        assert not any("kd_" in name for name in load_file(tmp_path / str(job) / "model.safetensors"))
    # one pass over digits' training split, then none; without the cache: one per training batch
    assert [m["kd/teacher_forward_passes"] for m in runs] == [math.ceil(1437 / 64), 0, 3]
    assert len({m["kd/teacher_accuracy"] for m in runs}) == 1
    # teacher outputs on digits: the training logits (cached jobs) and the validation hits, each computed once
    assert len(list((tmp_path / "cache" / "teacher_outputs" / "digits").glob("*.safetensors"))) == 2
    # the cached teacher trains exactly the same student as the live teacher (same seed, same T)
    assert runs[0]["eval/loss"] == pytest.approx(runs[2]["eval/loss"], rel=1e-5)
    assert runs[0]["kd/loss"] == pytest.approx(runs[2]["kd/loss"], rel=1e-5)
    printed = caplog.text
    assert len(re.findall(r"fine-tuning \S+ once", printed)) == 1  # the first job; the other two load it
    assert printed.count("reusing the fine-tuned model") == 2


def test_multilayer_text_run_with_attention_and_hidden_matches(tmp_path, tiny_bert, text_csvs):
    matches = (
        "[{teacher_layer:1,student_layer:0,feature:attention,loss:kl,weight:1.0},"
        "{teacher_layer:-1,student_layer:0,feature:hidden,loss:cosine,weight:1.0},"
        "{feature:logits,loss:ce,weight:1.0}]"
    )
    cfg = compose_cfg(
        [
            *tiny_text_overrides(text_csvs, tiny_bert),
            "distiller=multilayer",
            "model@distiller.teacher.model=hf",
            f"distiller.teacher.model.name_or_path={tiny_bert}",
            "distiller.teacher.finetune=null",
            f"distiller.matches={matches}",
            "distiller.cache_teacher=true",
            "trainer=smoke",
            "logger=none",
        ],
        output_dir=tmp_path / "run",
    )
    train.run(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed", results.get("error")
    metrics = results["metrics"]
    assert {"kd/m0_attention_kl", "kd/m1_hidden_cosine", "kd/m2_logits_ce", "kd/teacher_accuracy"} <= set(metrics)
    # 48 rows in one cache batch of 64, plus one 2-row probe that finds the feature widths for projections
    assert metrics["kd/teacher_forward_passes"] == 2
