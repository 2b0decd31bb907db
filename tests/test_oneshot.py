"""One-shot pruning (magnitude, Wanda, SparseGPT), sequential calibration, static int8 (runs: test_oneshot_runs.py)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.export.onnx_static import to_int8_onnx_static
from compress_sweeps.hooks import Describes, RunContext, Stateful
from compress_sweeps.pruners.oneshot import OneShotPruner, calibrate_sequentially, wanda_scores
from compress_sweeps.pruners.oneshot.calibration import FeatureNorms, Hessian, input_rows
from compress_sweeps.pruners.oneshot.masks import pruned_by_score
from compress_sweeps.tasks.sample import calibration_batches, calibration_indices
from compress_sweeps.weights.patterns import parse_pattern, pattern_holds


class Rows(torch.utils.data.Dataset):
    """Rows as the tasks give them: dicts of tensors with `idx` and `labels`."""

    def __init__(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.x, self.mask = x, mask

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = {"x": self.x[i], "labels": torch.tensor(0), "idx": torch.tensor(i)}
        return row | ({} if self.mask is None else {"attention_mask": self.mask[i]})


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x)) + x


class Chain(nn.Module):
    """Transformer-like: a ModuleList of blocks, each called on the previous block's output."""

    def __init__(self, width: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Plain(nn.Module):
    """Not a chain of blocks (an activation between the layers): the whole model is the stage."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


def correlated(n: int, width: int, seed: int = 0) -> torch.Tensor:
    """Inputs with unequal, correlated features (as real activations have), where reconstruction matters."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(width, width, generator=g) * torch.linspace(0.1, 3.0, width)
    return torch.randn(n, width, generator=g) @ mixing


def context(train_set, keys=("x",), **settings) -> RunContext:
    return RunContext(total_steps=0, num_labels=2, device=torch.device("cpu"), input_keys=keys, train_set=train_set,
                      **settings)  # fmt: skip


def pruner(**kwargs) -> OneShotPruner:
    return OneShotPruner(**({"exclude": [], "calibration_examples": 64, "calibration_batch_size": 16} | kwargs))


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


class ModelOnX(nn.Module):
    """`model(x=...)`, the call convention of the tasks' batches."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x)


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


def test_calibration_sampling_is_deterministic_for_a_seed():
    assert calibration_indices(100, 10, seed=3) == calibration_indices(100, 10, seed=3)
    assert calibration_indices(100, 10, seed=3) != calibration_indices(100, 10, seed=4)
    assert sorted(calibration_indices(5, 10, seed=0)) == [0, 1, 2, 3, 4]  # all rows when the split is smaller
    rows = Rows(correlated(100, 8))
    batches = calibration_batches(rows, ["x"], 10, 4, seed=3)
    assert [len(b["x"]) for b in batches] == [4, 4, 2] and set(batches[0]) == {"x"}

    def hessian(seed: int) -> torch.Tensor:
        found = {}

        def keep(name, module, statistic):
            found[name] = statistic.matrix.clone()

        model = ModelOnX(nn.Sequential(nn.Linear(8, 4)))
        batches = calibration_batches(rows, ["x"], 10, 4, seed)
        calibrate_sequentially(model, {"model.0": model.model[0]}, batches, lambda m: Hessian(8, "cpu"), keep, "cpu")
        return found["model.0"]

    assert torch.equal(hessian(3), hessian(3))
    assert not torch.equal(hessian(3), hessian(4))
    x = rows.x[calibration_indices(100, 10, seed=3)]
    assert torch.allclose(hessian(3), 2 * x.T @ x / 10, rtol=1e-4, atol=1e-4)  # H = 2 X^T X / n


class Recorded:
    """A statistic that keeps every row it is given (for tests only)."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []

    def add(self, rows: torch.Tensor) -> None:
        self.rows.append(rows.clone())


@pytest.mark.parametrize("model_type", [Chain, Plain])
def test_sequential_calibration_feeds_the_pruned_outputs_forward(model_type):
    torch.manual_seed(0)
    model = model_type()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    first, second = layers.values()
    x = correlated(32, 16)
    dense_first = first(x).detach()
    seen: dict[str, torch.Tensor] = {}

    def prune(name, module, statistic):  # zero the smaller half of the weights, in place
        seen[name] = torch.cat(statistic.rows)
        with torch.no_grad():
            module.weight.masked_fill_(pruned_by_score(module.weight.abs(), parse_pattern("1x1"), 0.5), 0.0)

    batches = [{"x": x[:16]}, {"x": x[16:]}]
    calibrate_sequentially(model, layers, batches, lambda m: Recorded(), prune, torch.device("cpu"))
    with torch.no_grad():
        pruned_first = first(x)
        expected = pruned_first.relu() + x if model_type is Chain else torch.tanh(pruned_first)
    name_first, name_second = layers
    assert torch.allclose(seen[name_first], x)
    assert torch.allclose(seen[name_second], expected, atol=1e-6)  # the pruned layer 1's outputs ...
    dense_expected = dense_first.relu() + x if model_type is Chain else torch.tanh(dense_first)
    assert not torch.allclose(seen[name_second], dense_expected, atol=1e-3)  # ... not the dense layer's


def test_layers_sharing_an_input_share_one_statistic():
    class QKV(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.out = (nn.Linear(8, 8) for _ in range(4))

        def forward(self, x):
            return self.out(self.q(x) * self.k(x) + self.v(x))

    model = QKV()
    statistics = {}
    calls = []

    def prune(name, module, statistic):
        statistics[name] = statistic
        calls.append(name)

    calibrate_sequentially(model, dict(model.named_children()), [{"x": torch.randn(4, 8)}], lambda m: Recorded(),
                           prune, torch.device("cpu"))  # fmt: skip
    assert calls == ["q", "k", "v", "out"]
    assert statistics["q"] is statistics["k"] is statistics["v"] is not statistics["out"]
    assert len(statistics["q"].rows) == 1  # the three layers' one input tensor is added once, not once per layer


def test_conv_inputs_become_im2col_rows():
    conv = nn.Conv2d(3, 4, 3, padding=1, stride=2)
    x = torch.randn(2, 3, 7, 7)
    rows = input_rows(conv, x)
    out = conv(x) - conv.bias.reshape(1, -1, 1, 1)
    by_rows = rows @ conv.weight.reshape(4, -1).T  # [positions, out]
    assert torch.allclose(by_rows, out.permute(0, 2, 3, 1).reshape(-1, 4), atol=1e-5)
    conv1d = nn.Conv1d(3, 4, 3, padding=1)
    x1 = torch.randn(2, 3, 9)
    by_rows = input_rows(conv1d, x1) @ conv1d.weight.reshape(4, -1).T
    expected = (conv1d(x1) - conv1d.bias.reshape(1, -1, 1)).permute(0, 2, 1).reshape(-1, 4)
    assert torch.allclose(by_rows, expected, atol=1e-5)


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
    assert all(bool(mask.all()) for mask in again._masks) and again.metrics()["pruner/calibration_s"] == 0.0
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(again._masks, oneshot._masks, strict=True))
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
        ({"method": "obs"}, "pruner.method=obs is unknown: must be one of magnitude | wanda | sparsegpt"),
        ({"pattern": "2:4", "target_sparsity": 0.7}, "pruner.target_sparsity=0.7 contradicts pruner.pattern=2:4"),
        ({"target_sparsity": 1.0}, "pruner.target_sparsity=1.0 is out of range: must be a number > 0 and < 1 or null"),
        ({"calibration_examples": 0}, "pruner.calibration_examples=0 is out of range: must be an integer >= 1"),
        ({"calibration_batch_size": 2.5}, "pruner.calibration_batch_size=2.5 has the wrong type: must be an integer"),
        ({"seed": -1}, "pruner.seed=-1 is out of range: must be an integer >= 0"),
        ({"damping": -0.1}, "pruner.damping=-0.1 is out of range: must be a number >= 0 and < 1"),
        ({"block_size": 0}, "pruner.block_size=0 is out of range"),
        ({"untrained": "ignore"}, "pruner.untrained=ignore is unknown: must be one of error | warn"),
        (
            {"pattern": "2:4", "block_size": 6},
            "pruner.pattern=2:4 does not suit sparsegpt: pruner.block_size=6 must be a multiple",
        ),
        ({"method": "wanda", "pattern": "channel"}, "pruner.pattern=channel does not suit wanda"),
        ({"layer_types": ["Embedding"]}, "pruner.layer_types=[Embedding] is out of range: must be a non-empty list"),
    ],
)
def test_bad_values_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        OneShotPruner(**kwargs)


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


# end to end: calibrate and compress without a training step


def test_bert_blocks_on_cached_inputs_see_what_full_forward_passes_see(tiny_bert, monkeypatch):
    """The transformer path (blocks run on cached, already-pruned inputs) collects the same rows as running the
    whole model for every group, the slow path that needs no assumption about the blocks."""
    from transformers import AutoModelForSequenceClassification

    from compress_sweeps.pruners.oneshot import sequential

    def collect(blocks: bool) -> dict[str, torch.Tensor]:
        model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
        layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layer." in n}
        assert (sequential.find_blocks(model, layers) is not None) == blocks
        seen = {}

        def prune(name, module, statistic):
            seen[name] = torch.cat(statistic.rows)
            with torch.no_grad():
                module.weight.masked_fill_(pruned_by_score(module.weight.abs(), parse_pattern("2:4"), 0.5), 0.0)

        g = torch.Generator().manual_seed(0)
        ids = torch.randint(5, 25, (8, 10), generator=g)
        mask = torch.ones_like(ids)
        mask[::2, 6:] = 0
        batches = [
            {"input_ids": ids[:4], "attention_mask": mask[:4]},
            {"input_ids": ids[4:], "attention_mask": mask[4:]},
        ]
        calibrate_sequentially(model, layers, batches, lambda m: Recorded(), prune, torch.device("cpu"))
        return seen

    by_blocks = collect(blocks=True)
    monkeypatch.setattr(sequential, "find_blocks", lambda model, layers: None)
    by_model = collect(blocks=False)
    assert list(by_blocks) == list(by_model) and len(by_blocks) == 2 * 6
    for name, rows in by_blocks.items():
        real = 4 * 10 + 4 * 6  # only the real tokens: 10 in the full sequences, 6 in the padded ones
        assert rows.shape[0] == real, name  # q, k and v: one statistic, their shared input added once
        assert torch.allclose(rows, by_model[name], atol=1e-5), name
