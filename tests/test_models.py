"""Model builders: the student copies the chosen teacher layers; the CNN fits both image sizes."""

from __future__ import annotations

import pytest
import torch

from compress_sweeps.errors import ConfigError
from compress_sweeps.models import ConvNet, pretrained_classifier, student_from_teacher, tokenizer_for
from compress_sweeps.models.cnn import MaxPool


def test_student_copies_the_mapped_teacher_layers(tiny_bert):
    teacher = pretrained_classifier(str(tiny_bert), num_labels=3)
    student = student_from_teacher(num_labels=3, teacher=str(tiny_bert), num_layers=1, layer_map=[1])
    assert student.config.num_hidden_layers == 1
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(
        s["bert.encoder.layer.0.attention.self.query.weight"], t["bert.encoder.layer.1.attention.self.query.weight"]
    )
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    tokenizer = tokenizer_for(student)  # the teacher's: the student keeps its embeddings
    assert len(tokenizer) == s["bert.embeddings.word_embeddings.weight"].shape[0]


def test_student_default_map_and_bad_maps(tiny_bert):
    student = student_from_teacher(num_labels=2, teacher=str(tiny_bert), num_layers=2)
    assert student.config.num_hidden_layers == 2
    with pytest.raises(ValueError, match="model.num_layers"):
        student_from_teacher(num_labels=2, teacher=str(tiny_bert), num_layers=5)
    with pytest.raises(ValueError, match="model.layer_map"):
        student_from_teacher(num_labels=2, teacher=str(tiny_bert), num_layers=1, layer_map=[7])


def test_missing_model_path_says_how_to_fix(tmp_path):
    """A path that does not exist is named as one, not as a hub name that cannot be reached."""
    with pytest.raises(ConfigError, match=r"model.name_or_path=.*/nowhere does not exist: must be a folder holding"):
        pretrained_classifier(str(tmp_path / "nowhere"), num_labels=2)


@pytest.mark.parametrize("size", [8, 28])
def test_cnn_handles_both_image_sizes(size):
    net = ConvNet(num_labels=10, channels=[8, 16], convs_per_stage=2, hidden=32)
    assert net(pixel_values=torch.randn(4, 1, size, size)).shape == (4, 10)
    assert tokenizer_for(net) is None


@pytest.mark.parametrize("size", [7, 8, 14])
def test_cnn_max_pool_is_torchs(size):
    """The channels-last inference path gives torch's values in NCHW; with gradients on, torch's own kernel runs."""
    x = torch.randn(3, 5, size, size, requires_grad=True)
    fast, plain = MaxPool(2, ceil_mode=True), torch.nn.MaxPool2d(2, ceil_mode=True)
    with torch.inference_mode():
        out = fast(x)
        assert torch.equal(out, plain(x)) and out.is_contiguous()
    fast(x).square().sum().backward()
    grad, x.grad = x.grad, None
    plain(x).square().sum().backward()
    assert torch.equal(grad, x.grad)
    with torch.no_grad():  # indices asked for: torch's kernel, as nn.MaxPool2d returns them
        values, indices = MaxPool(2, ceil_mode=True, return_indices=True)(x)
        assert torch.equal(indices, torch.nn.MaxPool2d(2, ceil_mode=True, return_indices=True)(x)[1])


def test_cnn_rejects_bad_widths():
    with pytest.raises(ValueError, match="model.channels"):
        ConvNet(num_labels=10, channels=[])


def test_hub_names_fail_fast_without_a_hub(monkeypatch, tiny_bert):
    import time

    from compress_sweeps.hub import check_hub_source

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: like a machine offline
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"model.name_or_path='prajjwal1/bert-mini'.*local folder"):
        pretrained_classifier("prajjwal1/bert-mini", num_labels=2)
    assert time.monotonic() - start < 10
    check_hub_source(str(tiny_bert), "model.name_or_path", "")  # a local folder never needs the hub


def test_interleaved_timing_follows_each_model_with_itself():
    """Every timed call comes right after a call of the same model, and which model goes first rotates."""
    from compress_sweeps.models.timing import interleaved_ms

    calls: list[str] = []

    def model(name):
        return lambda **inputs: calls.append(name)

    times = interleaved_ms({n: model(n) for n in "abc"}, {"x": torch.zeros(1)}, repeats=4, warmup=1)
    assert set(times) == {"a", "b", "c"} and all(t >= 0 for t in times.values())
    assert calls[:3] == ["a", "b", "c"]  # one warm-up each
    pairs = [tuple(calls[i : i + 2]) for i in range(3, len(calls), 2)]
    assert all(first == second for first, second in pairs) and len(pairs) == 4 * 3
    assert [pairs[3 * r][0] for r in range(4)] == ["a", "b", "c", "a"]
