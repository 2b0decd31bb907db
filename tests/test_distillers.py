"""Distillation: loss terms equal hand computations, the cache equals the live teacher, projections train."""

from __future__ import annotations

import copy
import math
import re
from functools import partial

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from compress_sweeps import batching
from compress_sweeps.distillers import LogitsDistiller, MultiLayerDistiller, Teacher, losses
from compress_sweeps.hooks import RunContext
from compress_sweeps.models import ConvNet, from_run, pretrained_classifier
from compress_sweeps.models.runs import save_model
from compress_sweeps.tasks import text_files
from compress_sweeps.tasks.images import TensorDictDataset
from compress_sweeps.trainer import Trainer

STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]
SMALL_TEACHER = partial(ConvNet, channels=[6], hidden=8)


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def kd_by_hand(student: list[list[float]], teacher: list[list[float]], t: float) -> float:
    total = 0.0
    for s_row, t_row in zip(student, teacher, strict=True):
        p_s = softmax([v / t for v in s_row])
        p_t = softmax([v / t for v in t_row])
        total += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
    return t * t * total / len(student)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_loss_equals_hand_computation_with_t_squared(temperature):
    student, teacher = torch.tensor(STUDENT), torch.tensor(TEACHER)
    value = losses.kd_kl(student, teacher, temperature)
    assert value.item() == pytest.approx(kd_by_hand(STUDENT, TEACHER, temperature), rel=1e-5)
    unscaled = kd_by_hand(STUDENT, TEACHER, temperature) / temperature**2  # the KL alone
    assert value.item() / unscaled == pytest.approx(temperature**2, rel=1e-5)


def test_hidden_and_attention_losses_equal_hand_computation():
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding
    student = torch.tensor([[[1.0, 0.0], [2.0, 2.0], [9.0, 9.0]]])
    teacher = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [-9.0, 5.0]]])
    # real tokens only: squared errors 1, 0 | 0, 4 over 4 elements
    assert losses.masked_mse(student, teacher, mask).item() == pytest.approx(5 / 4)
    # 1 - cos: token 0 is orthogonal to the zero vector (cos 0) -> 1; token 1: cos 45 deg
    expected_cosine = ((1 - 0.0) + (1 - 1 / math.sqrt(2))) / 2
    assert losses.masked_cosine(student, teacher, mask).item() == pytest.approx(expected_cosine, rel=1e-5)
    # attention maps [B=1, heads=1, T=3, T=3]; padded rows/keys must not count
    s_att = torch.tensor([[[[0.5, 0.5, 0.0], [0.25, 0.75, 0.0], [0.3, 0.3, 0.4]]]])
    t_att = torch.tensor([[[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]]])
    kl_rows = [1.0 * math.log(1.0 / 0.5), 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)]
    assert losses.attention_kl(s_att, t_att, mask).item() == pytest.approx(sum(kl_rows) / 2, rel=1e-5)
    squared = [(0.5 - 1.0) ** 2, 0.5**2, 0.25**2, 0.25**2]  # the 2x2 block of real (query, key) pairs
    assert losses.masked_mse(s_att, t_att, mask).item() == pytest.approx(sum(squared) / 4)


def toy_context(tmp_path, n: int = 12) -> RunContext:
    generator = torch.Generator().manual_seed(0)
    data = TensorDictDataset(torch.randn(n, 1, 8, 8, generator=generator), torch.arange(n) % 3)
    return RunContext(
        total_steps=3,
        num_labels=3,
        device=torch.device("cpu"),
        input_keys=("pixel_values",),
        train_set=data,
        task_name="toy",
        cache_dir=str(tmp_path / "cache"),
    )


def batch_of(context: RunContext, rows: list[int]) -> dict[str, torch.Tensor]:
    items = [context.train_set[i] for i in rows]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def test_logits_distiller_loss_and_cache_match_the_live_teacher(tmp_path):
    context = toy_context(tmp_path)
    batch = batch_of(context, [5, 0, 7, 3])
    student_logits = torch.tensor([[0.1, 0.2, 0.3], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [2.0, 1.0, 0.5]])
    task = torch.nn.functional.cross_entropy(student_logits, batch["labels"])
    results = {}
    for name, cache in [("live", False), ("first cached", True), ("second cached", True)]:
        distiller = LogitsDistiller({"main": Teacher(SMALL_TEACHER)}, 4.0, 0.7, 0.3, cache_teacher=cache)
        distiller.attach(torch.nn.Linear(1, 1), context)
        passes_after_attach = distiller.metrics()["kd/teacher_forward_passes"]
        results[name] = distiller.loss(student_logits, batch, task)
        teacher_logits = distiller.teachers.teachers["main"].module(batch["pixel_values"])
        expected = 0.3 * task + 0.7 * losses.kd_kl(student_logits, teacher_logits, 4.0)
        assert results[name].item() == pytest.approx(expected.item(), rel=1e-6)
        if name == "first cached":
            assert passes_after_attach == 1  # the whole 12-row split in one cache batch
        if name == "second cached":
            assert passes_after_attach == 0  # read back from disk: no teacher work at all
    assert results["first cached"].item() == pytest.approx(results["live"].item(), rel=1e-6)
    assert results["second cached"].item() == pytest.approx(results["live"].item(), rel=1e-6)
    metrics = distiller.metrics()
    assert {"kd/task_loss", "kd/loss", "kd/loss_main", "kd/temperature"} <= set(metrics)
    assert metrics["kd/temperature"] == 4.0
    peaks = [max(softmax([v / 4.0 for v in row])) for row in teacher_logits.tolist()]
    assert metrics["kd/teacher_confidence"] == pytest.approx(sum(peaks) / len(peaks), rel=1e-5)


@pytest.mark.parametrize(("combine", "kd_loss"), [("sum", "kl"), ("mean", "mse")])
def test_several_teachers_are_weighted_and_combined(tmp_path, combine, kd_loss):
    context = toy_context(tmp_path)
    teachers = {"a": Teacher(SMALL_TEACHER, weight=1.0), "b": Teacher(SMALL_TEACHER, weight=3.0, finetune_seed=1)}
    distiller = LogitsDistiller(teachers, 2.0, 1.0, 0.0, kd_loss=kd_loss, combine=combine)
    distiller.attach(torch.nn.Linear(1, 1), context)
    batch = batch_of(context, [1, 2])
    student = torch.zeros(2, 3)
    total = distiller.loss(student, batch, torch.tensor(0.0))
    terms = [distiller.kd_term(student, t.module(batch["pixel_values"])) for t in teachers.values()]
    expected = terms[0] + 3 * terms[1]
    assert total.item() == pytest.approx((expected / 4 if combine == "mean" else expected).item(), rel=1e-6)
    assert {"kd/teacher_confidence_a", "kd/teacher_confidence_b"} <= set(distiller.metrics())


def test_bad_values_name_the_config_key():
    with pytest.raises(ValueError, match="distiller.temperature"):
        LogitsDistiller({"main": Teacher(SMALL_TEACHER)}, temperature=0)
    with pytest.raises(ValueError, match="distiller.matches"):
        MultiLayerDistiller(Teacher(SMALL_TEACHER), [{"feature": "hidden", "loss": "kl"}])


def test_projection_is_trained_with_the_student_and_removed_at_the_end(tmp_path):
    context = toy_context(tmp_path)
    teacher = Teacher(partial(ConvNet, channels=[8], hidden=8))
    match = {"teacher_layer": "features.2", "student_layer": "features.2", "feature": "hidden", "loss": "mse"}
    distiller = MultiLayerDistiller(teacher, [match], alpha_student=0.0)
    student = ConvNet(3, channels=[4], hidden=8)
    distiller.attach(student, context)
    projection = student.kd_projections["m0"]
    assert (projection.in_features, projection.out_features) == (4, 8)
    optimizer = torch.optim.AdamW(student.parameters(), lr=0.05)  # as the trainer builds it: after attach
    before = projection.weight.detach().clone()
    batch, history = batch_of(context, list(range(12))), []
    for _ in range(15):
        outputs = student(batch["pixel_values"])
        loss = distiller.loss(outputs, batch, torch.tensor(0.0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(loss.item())
    assert not torch.equal(before, projection.weight)
    assert history[-1] < 0.5 * history[0]
    plain = distiller.finalize(student)
    assert not any(name.startswith("kd_projections") for name in plain.state_dict())


def test_hooked_bert_features_equal_hugging_face_outputs(tmp_path, tiny_bert):
    tokens = torch.tensor([[2, 7, 8, 9, 3, 0], [2, 10, 11, 3, 0, 0]])
    mask = (tokens != 0).long()
    rows = [
        {"input_ids": t, "attention_mask": m, "labels": torch.tensor(0), "idx": torch.tensor(i)}
        for i, (t, m) in enumerate(zip(tokens, mask, strict=True))
    ]
    context = RunContext(3, 3, torch.device("cpu"), ("input_ids", "attention_mask"), rows, "toy", str(tmp_path))
    matches = [
        {"teacher_layer": 1, "student_layer": 0, "feature": "hidden", "loss": "mse", "weight": 1.0},
        {"teacher_layer": -1, "student_layer": 0, "feature": "attention", "loss": "kl", "weight": 2.0},
        {"feature": "embedding", "loss": "cosine", "weight": 1.0},
    ]
    teacher = Teacher(partial(pretrained_classifier, str(tiny_bert)))
    distiller = MultiLayerDistiller(teacher, matches, alpha_student=1.0)
    student = pretrained_classifier(str(tiny_bert), num_labels=3).train()
    before = student.config._attn_implementation
    distiller.attach(student, context)
    student.eval()  # no dropout: compare against a second, reference forward pass
    outputs = student(input_ids=tokens, attention_mask=mask)
    total = distiller.loss(
        outputs,
        {
            "input_ids": tokens,
            "attention_mask": mask,
            "idx": torch.arange(2),
            "labels": torch.zeros(2, dtype=torch.long),
        },
        torch.tensor(0.0),
    )
    features = {"input_ids": tokens, "attention_mask": mask, "output_hidden_states": True, "output_attentions": True}
    with torch.no_grad():  # Hugging Face's own outputs of the same two models (both switched to eager attention)
        t = distiller.teachers.teachers["teacher"].module(**features)
        s = student(**features)
    expected = (
        losses.masked_mse(s.hidden_states[1], t.hidden_states[2], mask)
        + 2.0 * losses.attention_kl(s.attentions[0], t.attentions[1], mask)
        + losses.masked_cosine(s.hidden_states[0], t.hidden_states[0], mask)
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-4)
    assert s.attentions[0].shape == (2, 2, 6, 6)
    distiller.finalize(student)
    assert student.config._attn_implementation == before  # SDPA (or whatever it was) again after training


def test_teacher_from_a_run_folder_and_fine_tuned_once(tmp_path, caplog):
    caplog.set_level("INFO")
    model = ConvNet(3, channels=[4], hidden=8)
    save_model(
        model,
        tmp_path / "run",
        None,
        OmegaConf.create({"_target_": "compress_sweeps.models.ConvNet", "channels": [4], "hidden": 8}),
        3,
    )
    loaded = from_run(str(tmp_path / "run"), 3)
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match="3 labels"):
        from_run(str(tmp_path / "run"), 5)
    context = toy_context(tmp_path)
    weights = []
    for _ in range(2):
        teacher = Teacher(SMALL_TEACHER, finetune=Trainer(max_steps=2, batch_size=4, eval_every=None, progress=False))
        module = teacher.load(context, "digest")
        assert not module.training and not any(p.requires_grad for p in module.parameters())
        weights.append(module.state_dict())
    printed = caplog.text
    assert len(re.findall(r"fine-tuning \S+ once", printed)) == 1 and printed.count("reusing") == 1
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_cached_teacher_equals_live_teacher_per_example_with_per_batch_padding(tmp_path, tiny_bert, ragged_text_csvs):
    """The cache runs the teacher over batches of 64 padded to their longest example; training batches of 5 are
    padded to theirs. Per example, on its real tokens, a cached output equals the live teacher's on the batch."""
    task = text_files(*map(str, ragged_text_csvs), max_length=16)
    train, _ = task.datasets(AutoTokenizer.from_pretrained(tiny_bert))
    context = RunContext(3, 3, torch.device("cpu"), task.input_keys, train, "ragged", str(tmp_path / "cache"))
    build = partial(pretrained_classifier, str(tiny_bert))
    logits = LogitsDistiller({"main": Teacher(build)}, cache_teacher=True)
    logits.attach(torch.nn.Linear(1, 1), context)
    matches = [
        {"teacher_layer": 1, "student_layer": 1, "feature": "hidden", "loss": "mse"},
        {"teacher_layer": 0, "student_layer": 0, "feature": "attention", "loss": "kl"},
        {"feature": "embedding", "loss": "cosine"},
    ]
    live, cached = (MultiLayerDistiller(Teacher(build), matches, cache_teacher=cache) for cache in (False, True))
    student = build(num_labels=3).eval()
    with torch.no_grad():  # a student unlike its teacher, so the feature losses are far from 0
        generator = torch.Generator().manual_seed(0)
        for parameter in student.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    twin = copy.deepcopy(student)  # each distiller reads its own student's features
    live.attach(student, context)
    cached.attach(twin, context)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
    widths = set()
    for batch in batching.loader(train, 5, sampler=order):
        inputs = {k: batch[k] for k in task.input_keys}
        mask, lengths = batch["attention_mask"], batch["attention_mask"].sum(1).tolist()
        widths.add(mask.shape[1])
        teacher = logits.teachers.teachers["main"]
        expected = teacher.module(**inputs).logits
        torch.testing.assert_close(logits.teachers(batch)["main"]["logits"], expected, rtol=1e-4, atol=1e-4)
        from_cache = cached.teachers(batch)["teacher"]
        from_teacher = live.teachers.extract(live.teachers.teachers["teacher"], inputs)
        for key, value in from_teacher.items():
            assert from_cache[key].shape == value.shape, key
            for row, length in enumerate(lengths):  # real tokens: the first `length` positions (right padding)
                tokens = slice(0, length)
                real = {"logits": (row,), "m1": (row, slice(None), tokens, tokens)}.get(key, (row, tokens))
                torch.testing.assert_close(from_cache[key][real], value[real], rtol=1e-4, atol=1e-4)
                if key == "m0":  # hidden states: zeros at the padding positions, whatever the batch
                    assert not from_cache[key][row, length:].any()
        zero = torch.tensor(0.0)  # the whole KD loss: the same with the cache as with the live teacher
        expected_loss = live.loss(student(**inputs), batch, zero).item()
        assert cached.loss(twin(**inputs), batch, zero).item() == pytest.approx(expected_loss, rel=1e-4)
        assert expected_loss > 0.01
    assert len(widths) > 1  # batches of several widths were answered from one cache
