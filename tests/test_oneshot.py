"""One-shot pruning (magnitude, Wanda, SparseGPT) and static int8 (calibration: test_oneshot_calibration.py; runs:
test_oneshot_runs.py)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from oneshot_models import Chain, ModelOnX, Rows, correlated
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.export.onnx_static import to_int8_onnx_static
from compress_sweeps.hooks import Describes, RunContext, Stateful
from compress_sweeps.pruners.oneshot import Magnitude, OneShotPruner, SparseGPT, Wanda, wanda_scores
from compress_sweeps.pruners.oneshot.calibration import FeatureNorms
from compress_sweeps.weights.patterns import pattern_holds


def context(train_set, keys=("x",), **settings) -> RunContext:
    return RunContext(total_steps=0, num_labels=2, device=torch.device("cpu"), input_keys=keys, train_set=train_set,
                      **settings)  # fmt: skip


METHODS = {"magnitude": Magnitude, "wanda": Wanda, "sparsegpt": SparseGPT}


def pruner(method: str, block_size: int = 128, **kwargs) -> OneShotPruner:
    """A pruner with the method named (`block_size`: SparseGPT's) and the small calibration sample of these tests."""
    built = SparseGPT(block_size=block_size) if method == "sparsegpt" else METHODS[method]()
    settings = {"exclude": [], "calibration_examples": 64, "calibration_batch_size": 16} | kwargs
    return OneShotPruner(method=built, **settings)


def reconstruction_error(dense: torch.Tensor, pruned: torch.Tensor, x: torch.Tensor) -> float:
    return float(torch.linalg.norm(x @ dense.T - x @ pruned.T))


@pytest.mark.parametrize("pattern", ["1x1", "2:4"])
def test_sparsegpt_reconstructs_a_linear_layer_better_than_magnitude(pattern):
    torch.manual_seed(0)
    x = correlated(512, 128)
    layer = nn.Linear(128, 64)
    dense = layer.weight.detach().clone()
    errors, weights = {}, {}
    for method in ("magnitude", "sparsegpt"):
        model = nn.Sequential(nn.Linear(128, 64))
        model[0].load_state_dict(layer.state_dict())
        oneshot = pruner(method=method, pattern=pattern, calibration_examples=512, calibration_batch_size=64)
        oneshot.attach(ModelOnX(model), context(Rows(x)))
        weights[method] = model[0].weight.detach().clone()
        errors[method] = reconstruction_error(dense, weights[method], x)  # on the calibration inputs themselves
    for weight in weights.values():
        assert float((weight == 0).float().mean()) == 0.5
        assert pattern_holds(weight, pattern)
    if pattern == "2:4":  # exactly two non-zeros in every run of four
        assert bool(((weights["sparsegpt"] != 0).reshape(64, 32, 4).sum(-1) == 2).all())
    # measured here: 0.46 (1x1) and 0.84 (2:4) of magnitude's error (2:4 leaves the mask little choice)
    assert errors["sparsegpt"] < 0.9 * errors["magnitude"], errors


def test_sparsegpt_zeroes_dead_inputs_and_prunes_whole_blocks():
    x = correlated(128, 32)
    x[:, 5] = 0.0  # a dead input feature: its weights go to zero (the reference's treatment)
    model = ModelOnX(nn.Sequential(nn.Linear(32, 8)))
    oneshot = pruner(method="sparsegpt", pattern="1x4", target_sparsity=0.25, block_size=8)
    oneshot.attach(model, context(Rows(x)))
    assert bool((model.model[0].weight[:, 5] == 0).all())
    mask = model.model[0].weight_mask  # the chosen blocks: exactly a quarter, in whole runs of four columns
    assert float((mask == 0).float().mean()) == 0.25 and pattern_holds(mask, "1x4")


def test_wanda_scores_equal_a_hand_computation():
    weight = torch.tensor([[1.0, -2.0, 0.5], [-3.0, 1.0, 1.0]])
    tokens = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # ||X_j||_2 over the four tokens: sqrt(1 + 1) = sqrt(2), sqrt(2), sqrt(4 + 4 + 1) = 3
    by_hand = torch.tensor([[2**0.5, 2 * 2**0.5, 1.5], [3 * 2**0.5, 2**0.5, 3.0]])
    norms = FeatureNorms(3, torch.device("cpu"))
    norms.add(tokens)
    assert torch.allclose(wanda_scores(weight, norms.norms()), by_hand)
    # through the pruner: the tokens come as two padded sequences, whose padding must not count
    padded = torch.zeros(2, 3, 3)
    padded[0, :2], padded[1, :2] = tokens[:2], tokens[2:]
    padded[:, 2] = 100.0  # padding with huge values: it would swamp the norms if it leaked in
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    model = ModelOnX(nn.Sequential(nn.Linear(3, 2)))
    with torch.no_grad():
        model.model[0].weight.copy_(weight)
    pruner(method="wanda", target_sparsity=1 / 3).attach(model, context(Rows(padded, mask), ("x", "attention_mask")))
    # per output row the lowest score goes: row 0 loses column 0 (|W| alone would take column 2), row 1 column 1
    kept = model.model[0].weight != 0
    assert kept.tolist() == [[False, True, True], [True, False, True]]


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["1x1", "2:4", "4x1"])
def test_every_method_hits_the_target_and_the_pattern(method, pattern):
    torch.manual_seed(0)
    model = Chain(width=16, depth=3)
    oneshot = pruner(method=method, pattern=pattern, block_size=8)
    oneshot.attach(model, context(Rows(correlated(64, 16))))
    [promise] = oneshot.spec().sparsity
    assert promise.target == 0.5 and len(promise.patterns) == 3 and oneshot.spec().keeps_zeros
    for name, label in promise.patterns.items():
        weight = model.get_parameter(name)
        assert label == pattern and pattern_holds(weight, pattern), name
        assert float((weight == 0).float().mean()) == pytest.approx(0.5), name
    metrics = oneshot.metrics()
    assert metrics["pruner/sparsity"] == pytest.approx(0.5) and metrics["pruner/target_sparsity"] == 0.5
    assert metrics["pruner/calibration_s"] >= 0.0 and metrics["pruner/prune_s"] > 0.0


def test_masks_stay_locked_through_recovery_training_and_state_round_trips():
    torch.manual_seed(0)
    model = Chain()
    oneshot = pruner(method="wanda", pattern="2:4")
    oneshot.attach(model, context(Rows(correlated(64, 16))))
    zeros = {n: model.get_parameter(n) == 0 for n in oneshot.spec().patterns}
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    for step in range(1, 4):
        model(torch.randn(8, 16)).square().sum().backward()
        oneshot.before_optimizer_step(step)
        optimizer.step()
        optimizer.zero_grad()
        oneshot.after_optimizer_step(step)
    for name, was_zero in zeros.items():
        assert bool((model.get_parameter(name)[was_zero] == 0).all()), name
    assert isinstance(oneshot, Stateful) and isinstance(oneshot, Describes)
    state = oneshot.state_dict()
    other = Chain()
    again = pruner(method="sparsegpt", pattern="2:4")
    again.attach(other, context(None, resumes_from=3))  # resuming: no calibration (no data needed), masks all ones
    assert all(bool(mask.all()) for mask in again.locked.masks) and again.metrics()["pruner/calibration_s"] == 0.0
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(again.locked.masks, oneshot.locked.masks, strict=True))
    assert again.metrics()["pruner/calibration_s"] == oneshot.metrics()["pruner/calibration_s"]  # restored
    oneshot.finalize(model)
    assert not any(hasattr(m, "weight_mask") for m in model.modules())


def test_an_untrained_head_stops_a_zero_step_run_unless_allowed_and_is_warned_about_with_steps(caplog):
    head = ("classifier.weight",)
    with pytest.raises(ConfigError, match=r"pruner.untrained=error stops a 0-step run: must be warn .* classifier"):
        pruner(method="magnitude").attach(Chain(), context(None, untrained=head))
    with caplog.at_level(logging.WARNING):
        pruner(method="magnitude", untrained="warn").attach(Chain(), context(None, untrained=head))
        steps = RunContext(total_steps=5, num_labels=2, device=torch.device("cpu"), untrained=head)
        pruner(method="magnitude").attach(Chain(), steps)  # recovery training trains the head: a warning
        pruner(method="magnitude").attach(Chain(), context(None))  # a trained model: nothing to say
    warned = [r.getMessage() for r in caplog.records if "random initialisation" in r.getMessage()]
    assert len(warned) == 2 and "the 5 training steps train it after pruning" in warned[1]


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["1x1", "2:4"])
def test_the_starting_models_zeros_are_pruned_first_and_kept(method, pattern):
    torch.manual_seed(0)
    model = Chain(width=16, depth=2)
    with torch.no_grad():  # a pruned starting model: a quarter of each layer already zero, one per run of four
        for block in model.blocks:
            block.fc.weight[:, ::4] = 0.0
    was_zero = {n: model.get_parameter(n) == 0 for n in ("blocks.0.fc.weight", "blocks.1.fc.weight")}
    oneshot = pruner(method=method, pattern=pattern)
    oneshot.attach(model, context(Rows(correlated(64, 16))))
    for name, zeros in was_zero.items():
        weight = model.get_parameter(name)
        assert bool((weight[zeros] == 0).all()) and float((weight == 0).float().mean()) == 0.5, name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "obs"}, "pruner.method=obs has the wrong type: must be a config of conf/pruner/method/"),
        ({"pattern": "2:4", "target_sparsity": 0.7}, "pruner.target_sparsity=0.7 contradicts pruner.pattern=2:4"),
        ({"target_sparsity": 1.0}, "pruner.target_sparsity=1.0 is out of range: must be a number > 0 and < 1 or null"),
        ({"calibration_examples": 0}, "pruner.calibration_examples=0 is out of range: must be an integer >= 1"),
        ({"calibration_batch_size": 2.5}, "pruner.calibration_batch_size=2.5 has the wrong type: must be an integer"),
        ({"seed": -1}, "pruner.seed=-1 is out of range: must be an integer >= 0"),
        ({"block_reduce": "avg"}, "pruner.block_reduce=avg is unknown: must be one of sum | mean | max"),
        ({"untrained": "ignore"}, "pruner.untrained=ignore is unknown: must be one of error | warn"),
        (
            {"method": SparseGPT(block_size=6), "pattern": "2:4"},
            "pruner.pattern=2:4 does not suit sparsegpt: pruner.method.block_size=6 must be a multiple",
        ),
        ({"method": Wanda(), "pattern": "channel"}, "pruner.pattern=channel does not suit wanda"),
        ({"layer_types": ["Embedding"]}, "pruner.layer_types=[Embedding] is out of range: must be a non-empty list"),
    ],
)
def test_bad_values_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        OneShotPruner(**({"method": SparseGPT()} | kwargs))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"damping": -0.1}, "pruner.method.damping=-0.1 is out of range: must be a number >= 0 and < 1"),
        ({"block_size": 0}, "pruner.method.block_size=0 is out of range"),
    ],
)
def test_bad_sparsegpt_values_are_named_under_its_own_node(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SparseGPT(**kwargs)


def test_layers_that_cannot_be_calibrated_are_named():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten())
    with pytest.raises(ConfigError, match="pruner.exclude=\\[\\] keeps layer 'model.0': grouped convolutions"):
        pruner(method="wanda").attach(ModelOnX(model), context(Rows(torch.randn(8, 4, 5, 5))))


def test_static_int8_onnx_gives_logits_close_to_fp32(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 5)).eval()
    wrapped = ModelOnX(model).eval()
    images = torch.rand(64, 1, 6, 6)
    batches = [{"x": images[i : i + 16]} for i in range(0, 64, 16)]
    int8, facts = to_int8_onnx_static(wrapped, batches, tmp_path / "model.int8-static.onnx")
    assert (tmp_path / "model.int8-static.onnx").is_file()
    assert facts["int8_weights"] == 2 and facts["quantized_activations"] >= 2 and facts["calibration_examples"] == 64
    fresh = torch.rand(16, 1, 6, 6)
    with torch.no_grad():
        reference = wrapped(x=fresh)
    quantized = int8(x=fresh)
    scale = float(reference.abs().max())
    assert float((quantized - reference).abs().max()) < 0.1 * scale  # measured: 0.066
    assert F.cosine_similarity(quantized.flatten(), reference.flatten(), dim=0) > 0.999


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_calibrates_one_batch_at_a_time(tmp_path, monkeypatch, method):
    """ONNX Runtime's histogram calibrators hold every activation of every batch given to one collect_data call
    (SmolLM2-135M: past 24 GiB at 256 examples, killed): each call gets one batch, and the model still matches."""
    from onnxruntime.quantization import calibrate

    calls = []

    def counting(collect):
        def collect_counted(self, reader):
            rows = list(iter(reader.get_next, None))
            calls.append(len(rows))
            reader.rows = iter(rows)
            return collect(self, reader)

        return collect_counted

    for calibrater in (calibrate.MinMaxCalibrater, calibrate.HistogramCalibrater):
        monkeypatch.setattr(calibrater, "collect_data", counting(calibrater.collect_data))
    torch.manual_seed(0)
    model = ModelOnX(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5))).eval()
    batches = [{"x": torch.randn(16, 6)} for _ in range(4)]
    int8, facts = to_int8_onnx_static(model, batches, tmp_path / "m.onnx", calibrate_method=method)
    assert calls == [1, 1, 1, 1] and facts["calibration_examples"] == 64
    with torch.no_grad():
        reference = model(**batches[0])
    assert F.cosine_similarity(int8(**batches[0]).flatten(), reference.flatten(), dim=0) > 0.99


def test_static_int8_keeps_a_cnn_int8_between_its_convolutions(tmp_path):
    """ReLU, max-pool, average pool and Flatten are quantized with the convolutions: no float tensor between them."""
    import onnx

    from compress_sweeps.models import ConvNet

    torch.manual_seed(0)
    model = ModelOnX(ConvNet(num_labels=4, channels=(8, 16))).eval()  # its 2x2 pooling exports as AveragePool
    batches = [{"x": torch.rand(16, 1, 28, 28)} for _ in range(2)]
    int8, _ = to_int8_onnx_static(model, batches, tmp_path / "cnn.onnx")
    graph = onnx.load(str(tmp_path / "cnn.onnx")).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    pools = [node for node in graph.node if node.op_type in ("MaxPool", "AveragePool", "Flatten")]
    assert len(pools) == 4 and all(producer[node.input[0]] == "DequantizeLinear" for node in pools)
    assert not any(node.op_type == "Relu" for node in graph.node)  # folded into the output ranges of conv and Gemm
    with torch.no_grad():
        reference = model(**batches[0])
    assert F.cosine_similarity(int8(**batches[0]).flatten(), reference.flatten(), dim=0) > 0.999


def test_static_int8_onnx_on_a_tiny_bert(tmp_path, tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 25, (32, 12), generator=g)  # the tiny vocabulary has 29 tokens
    mask = torch.ones_like(ids)
    mask[::2, 9:] = 0  # padded rows, as the tasks encode them
    batches = [{"input_ids": ids[i : i + 8], "attention_mask": mask[i : i + 8]} for i in range(0, 32, 8)]
    int8, facts = to_int8_onnx_static(model, batches, tmp_path / "bert.onnx")
    assert facts["int8_weights"] == 2 * 6 + 2  # the six Linear layers of each block, pooler and classifier
    with torch.no_grad():
        reference = model(**batches[0]).logits
    assert torch.allclose(int8(**batches[0]), reference, atol=0.05 * float(reference.abs().max()) + 1e-3)


def test_static_int8_rejects_an_unknown_calibration_method(tmp_path):
    with pytest.raises(ConfigError, match="export.calibrate_method=kl is unknown"):
        to_int8_onnx_static(nn.Linear(2, 2), [{"input": torch.zeros(1, 2)}], tmp_path / "m.onnx", calibrate_method="kl")
