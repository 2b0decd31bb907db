"""Structured slimming: heads, FFN neurons, blocks and conv channels scored, allocated by cost, masked while
training, then physically removed; the slim model computes what the masked one did, its shapes and costs are
measured against the dense model, it reloads from a run folder and exports to ONNX (conv channels:
test_slim_channels.py; runs: test_slim_runs.py)."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from omegaconf import OmegaConf
from slim_models import bert, context, logits, measured, oneshot, slim_pruner, tokens
from torch import nn
from transformers import AutoModelForSequenceClassification

from compress_sweeps.errors import ConfigError
from compress_sweeps.models import ConvNet, from_run, pretrained_classifier
from compress_sweeps.models.hf import from_pretrained_rebuilds
from compress_sweeps.models.runs import save_model
from compress_sweeps.models.structure import STRUCTURE
from compress_sweeps.pruners.criteria import SnipMomentum
from compress_sweeps.pruners.slim import SlimPruner


@pytest.mark.parametrize("metric", ["params", "flops"])
@pytest.mark.parametrize("units", [["heads", "ffn"], ["heads"], ["ffn"], ["heads", "ffn", "blocks"]])
def test_slim_bert_computes_what_the_masked_one_did(units, metric):
    model, inputs = bert(), tokens()
    target = 0.3 if units == ["heads"] else 0.5
    pruner = oneshot(model, inputs, units=units, target=target, target_metric=metric)
    masked = logits(model, inputs)
    slim = pruner.finalize(model)
    torch.testing.assert_close(logits(slim, inputs), masked, atol=1e-5, rtol=1e-5)
    structure = measured(slim, bert(), pruner)
    assert structure["params"]["model_after"] < structure["params"]["model_before"]
    removed = structure["removed"][metric]  # measured on the slim model: parameters counted, FLOPs re-counted
    promise = pruner.spec().structure
    assert promise.target - promise.tolerance - 1e-9 <= removed <= target + 1e-9, (structure, promise)
    assert promise.tolerance <= (1 / 12 if units == ["heads"] else 0.1)  # one head of twelve is the coarsest step
    for name, layer in structure["layers"].items():
        if layer["kind"] == "heads":
            assert slim.get_submodule(name).num_attention_heads == layer["kept"] >= 1 and layer["total"] == 4
            assert slim.get_submodule(name).query.out_features == layer["kept"] * 8


def test_heads_differ_per_layer_and_the_last_head_stays():
    model, inputs = bert(heads=4), tokens()
    with torch.no_grad():  # layer 0's heads matter most, layer 2's least: the global budget takes from layer 2
        for i, scale in enumerate([3.0, 1.0, 0.2]):
            for part in ("query", "key", "value"):
                getattr(model.bert.encoder.layer[i].attention.self, part).weight.mul_(scale)
    pruner = oneshot(model, inputs, units=["heads"], target=0.45, max_sparsity_per_layer=1.0)
    slim = pruner.finalize(model)
    counts = [block.attention.self.num_attention_heads for block in slim.bert.encoder.layer]
    assert len(set(counts)) > 1 and min(counts) >= 1, counts
    assert counts[0] >= counts[2]


def test_slim_false_keeps_the_shapes_with_whole_units_zero():
    model, inputs = bert(), tokens()
    shapes = {n: p.shape for n, p in model.named_parameters()}
    pruner = oneshot(model, inputs, units=["heads", "ffn"], target=0.5, slim=False)
    masked = logits(model, inputs)
    plain = pruner.finalize(model)
    assert {n: p.shape for n, p in plain.named_parameters()} == shapes
    assert not any(name.endswith("_mask") for name, _ in plain.named_buffers())
    torch.testing.assert_close(logits(plain, inputs), masked)
    block = plain.bert.encoder.layer[0]
    zero_rows = (block.intermediate.dense.weight == 0).all(dim=1)
    kept = next(g.kept for g in pruner.groups if g.name == "bert.encoder.layer.0.intermediate.dense")
    assert int((~zero_rows).sum()) == kept
    assert bool((block.output.dense.weight[:, zero_rows] == 0).all())
    # what it promises instead of cut-out units: whole zero blocks in every weight one unit group slices
    spec = pruner.spec()
    assert not spec.structure.removes_units
    patterns = spec.patterns
    assert patterns["bert.encoder.layer.0.attention.self.query.weight"] == "8x32"  # a head: 8 rows x all inputs
    assert patterns["bert.encoder.layer.0.attention.output.dense.weight"] == "32x8"
    assert patterns["bert.encoder.layer.0.intermediate.dense.weight"] == "1x32"
    assert patterns["bert.encoder.layer.0.output.dense.weight"] == "32x1"
    from compress_sweeps.weights.patterns import pattern_holds

    weights = dict(plain.named_parameters())
    assert all(pattern_holds(weights[name], label) for name, label in patterns.items())


def test_round_to_keeps_ffn_widths_a_multiple():
    model, inputs = bert(ffn=64), tokens()
    pruner = oneshot(model, inputs, units=["ffn"], target=0.5, round_to=8)
    slim = pruner.finalize(model)
    widths = [block.intermediate.dense.out_features for block in slim.bert.encoder.layer]
    assert all(w % 8 == 0 and w >= 8 for w in widths), widths
    assert all(block.output.dense.in_features == w for block, w in zip(slim.bert.encoder.layer, widths, strict=True))


def test_whole_blocks_go_and_a_uniform_model_loads_with_from_pretrained(tmp_path):
    model, inputs = bert(layers=4), tokens()
    pruner = oneshot(model, inputs, units=["blocks"], target=0.5)
    masked = logits(model, inputs)  # removed blocks pass their input through while masked
    slim = pruner.finalize(model)
    assert len(slim.bert.encoder.layer) == 2 and slim.config.num_hidden_layers == 2
    torch.testing.assert_close(logits(slim, inputs), masked)
    assert measured(slim, bert(layers=4), pruner)["blocks"] == {"bert.encoder.layer": {"kept": 2, "total": 4}}
    uneven = bert()
    uneven = oneshot(uneven, tokens(), units=["heads", "ffn"], target=0.5).finalize(uneven)  # heads a config cannot say
    assert from_pretrained_rebuilds(slim) and not from_pretrained_rebuilds(uneven)
    slim.save_pretrained(tmp_path)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(plain, inputs), masked)


def test_slim_tiny_bert_reloads_from_its_run_folder(tiny_bert, tmp_path):
    model = pretrained_classifier(str(tiny_bert), num_labels=3).eval()
    dense = copy.deepcopy(model)
    inputs = {k: v.clamp(max=model.config.vocab_size - 1) for k, v in tokens().items()}
    pruner = oneshot(model, inputs, units=["heads", "ffn", "blocks"], target=0.5, target_metric="flops")
    slim = pruner.finalize(model)
    expected = logits(slim, inputs)
    config = OmegaConf.create(
        {"_target_": "compress_sweeps.models.pretrained_classifier", "name_or_path": str(tiny_bert)}
    )
    save_model(dense, tmp_path / "dense", None, config, num_labels=3, reference=dense)
    assert not (tmp_path / "dense" / STRUCTURE).exists()  # the config rebuilds it: no record needed
    save_model(slim, tmp_path, None, config, num_labels=3, reference=dense)
    assert (tmp_path / STRUCTURE).is_file()
    reloaded = from_run(str(tmp_path), num_labels=3).eval()
    torch.testing.assert_close(logits(reloaded, inputs), expected)
    with pytest.raises(ConfigError, match="from_run"):  # config.json alone would rebuild the wrong shapes
        pretrained_classifier(str(tmp_path), num_labels=3)


def test_iterative_snip_momentum_masks_only_grow_and_stay_zero_under_adamw():
    model, inputs = bert(), tokens()
    model.train()
    pruner = SlimPruner(
        criterion=SnipMomentum, target=0.5, units=["heads", "ffn"], start_step=1, end_step=6, update_frequency=1
    )
    pruner.attach(model, context(inputs))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    previous = [g.pruned.clone() for g in pruner.groups]
    targets = []
    for step in range(1, 9):
        loss = model(**inputs, labels=torch.tensor([0, 1, 2, 0])).loss
        loss.backward()
        pruner.before_optimizer_step(step)
        optimizer.step()
        optimizer.zero_grad()
        pruner.after_optimizer_step(step)
        targets.append(pruner.metrics()["pruner/target"])
        for group, before in zip(pruner.groups, previous, strict=True):
            assert bool((group.pruned | ~before).all())  # pruned stays pruned
        previous = [g.pruned.clone() for g in pruner.groups]
        for name, mask in pruner._masks.items():
            assert bool((dict(model.named_parameters())[name][mask == 0] == 0).all()), name
    assert targets == sorted(targets) and targets[-1] == 0.5
    model.eval()
    masked = logits(model, inputs)
    slim = pruner.finalize(model)
    torch.testing.assert_close(logits(slim, inputs), masked, atol=1e-5, rtol=1e-5)


def test_state_dict_restores_the_pruned_units():
    model, inputs = bert(), tokens()
    pruner = oneshot(model, inputs, units=["heads", "ffn", "blocks"], target=0.5)
    state = pruner.state_dict()
    fresh_model = bert()
    fresh = slim_pruner(units=["heads", "ffn", "blocks"], target=0.5, start_step=5, end_step=5)
    fresh.attach(fresh_model, context(inputs))
    fresh.load_state_dict(state)
    fresh.after_optimizer_step(1)
    torch.testing.assert_close(logits(fresh_model, inputs), logits(model, inputs))
    assert [g.kept for g in fresh.groups] == [g.kept for g in pruner.groups]


# --- bad settings fail before training, naming the key ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": 1.0}, "pruner.target=1.0 is out of range: must be a number > 0 and < 1"),
        ({"target": 0.0}, "pruner.target=0.0 is out of range"),
        ({"units": ["heads", "rows"]}, "pruner.units=[heads,rows] is unknown"),
        ({"units": []}, "pruner.units=[] is out of range: must be a non-empty list"),
        ({"units": ["channels", "heads"]}, "pruner.units=[channels,heads] is out of range"),
        ({"target_metric": "macs"}, "pruner.target_metric=macs is unknown: must be one of params | flops"),
        ({"round_to": 0}, "pruner.round_to=0 is out of range"),
        ({"units": ["blocks"], "slim": False}, "pruner.slim=false"),
        ({"criterion": SnipMomentum, "start_step": 0}, "pruner.start_step=0 prunes before any gradient"),
        ({"min_sparsity_per_layer": 0.5, "max_sparsity_per_layer": 0.2}, "pruner.min_sparsity_per_layer=0.5"),
    ],
)
def test_bad_settings_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        slim_pruner(**kwargs)


def test_a_schedule_beyond_the_run_fails_before_loading():
    with pytest.raises(ConfigError, match="pruner.end_step=50 is beyond the run"):
        slim_pruner(start_step=10, end_step=50).check(total_steps=20)


def test_an_unreachable_target_names_the_most_that_can_go():
    model, inputs = bert(), tokens()
    with pytest.raises(ConfigError, match=r"pruner.target=0.9 cannot be reached: must be <= 0\.\d+"):
        oneshot(model, inputs, units=["heads"], target=0.9)


def test_a_cnn_has_no_heads_and_a_bert_no_traceable_channels():
    inputs = {"pixel_values": torch.randn(2, 1, 8, 8)}
    with pytest.raises(ConfigError, match="finds no such block in this ConvNet"):
        oneshot(ConvNet(3), inputs, keys=("pixel_values",), units=["heads"])

    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("data-dependent control flow")

    with pytest.raises(ConfigError, match="cannot trace this model: .*Untraceable"):
        oneshot(Untraceable(), inputs, keys=("pixel_values",), units=["channels"])


def test_include_that_matches_no_block_names_the_key():
    with pytest.raises(ConfigError, match="pruner.include=.*matches no encoder block"):
        oneshot(bert(), tokens(), include=["nothing"])


def test_slim_bert_with_different_heads_per_layer_exports_to_onnx(tmp_path):
    from compress_sweeps.export.onnx import OnnxModel, export_onnx, to_int8_onnx

    model, inputs = bert(heads=4), tokens()
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight.mul_(5.0)
    pruner = oneshot(model, inputs, units=["heads", "ffn"], target=0.5, max_sparsity_per_layer=1.0)
    slim = pruner.finalize(model)
    heads = [b.attention.self.num_attention_heads for b in slim.bert.encoder.layer]
    assert len(set(heads)) > 1, heads
    path = export_onnx(slim, inputs, tmp_path / "slim.onnx")
    onnx_logits = OnnxModel(path, threads=1)(**inputs)
    torch.testing.assert_close(onnx_logits, logits(slim, inputs), atol=1e-4, rtol=1e-4)
    int8, counts = to_int8_onnx(slim, inputs, tmp_path / "slim.int8.onnx", threads=1)  # the int8 export too
    assert int8(**inputs).shape == onnx_logits.shape and sum(counts.values()) == 3 * 6 + 2
