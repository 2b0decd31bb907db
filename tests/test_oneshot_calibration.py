"""Sequential calibration (pruners/oneshot/sequential.py, replay.py, calibration.py): seeded samples, every layer
calibrated on the already-pruned layers' outputs, shared statistics, im2col rows; replay gives the same values as
recomputing with fewer forward passes, and the Hessian is accumulated from its upper blocks."""

from __future__ import annotations

import pytest
import torch
from oneshot_models import Chain, ModelOnX, Plain, Recorded, Rows, correlated
from torch import nn

from compress_sweeps.models import ConvNet
from compress_sweeps.pruners.oneshot import calibrate_sequentially
from compress_sweeps.pruners.oneshot.calibration import Hessian, input_rows
from compress_sweeps.pruners.oneshot.method import Goal
from compress_sweeps.pruners.oneshot.replay import Trace
from compress_sweeps.pruners.oneshot.sparsegpt import sparsegpt_prune
from compress_sweeps.tasks.sample import calibration_batches, calibration_indices
from compress_sweeps.weights.patterns import as_matrix, parse_pattern


def _prune_half(name: str, module: nn.Module, statistic: Hessian) -> None:
    """SparseGPT at 50% unstructured, in place: a pruned layer's outputs change, so a stale replay would show."""
    weight = as_matrix(module.weight.data)
    first = torch.zeros_like(weight, dtype=torch.bool)
    pruned, _ = sparsegpt_prune(weight, statistic.matrix, Goal(parse_pattern("1x1"), 0.5), 0.01, 128, first)
    module.weight.data.copy_(pruned.reshape(module.weight.shape))


def _calibrate(model: nn.Module, layers: dict[str, nn.Module], batches: list[dict], replay: bool, monkeypatch):
    """Prune `layers` of `model` in place; the Hessians each group saw, and how often each layer computed."""
    with monkeypatch.context() as patch:
        if not replay:  # nothing counts as finished: every pass recomputes everything, the scheme before replay
            patch.setattr(Trace, "finished_before", lambda self, position: [])
        hessians: dict[str, torch.Tensor] = {}
        computed = dict.fromkeys(layers, 0)
        handles = [m.register_forward_hook(lambda m, a, o, n=n: computed.__setitem__(n, computed[n] + 1))
                   for n, m in layers.items()]  # fmt: skip

        def prune(name, module, statistic):
            hessians[name] = statistic.matrix.clone()
            _prune_half(name, module, statistic)

        def new_statistic(module):
            return Hessian(as_matrix(module.weight).shape[1], torch.device("cpu"))

        calibrate_sequentially(model, layers, batches, new_statistic, prune, torch.device("cpu"))
        for handle in handles:
            handle.remove()
    return hessians, computed


def _bert_and_batches(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layer." in n}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 25, (12, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, 7:] = 0
    batches = [{"input_ids": ids[i : i + 4], "attention_mask": mask[i : i + 4]} for i in range(0, 12, 4)]
    return model, layers, batches


def test_replay_gives_the_same_hessians_and_weights_as_recomputing_a_transformer(tiny_bert, monkeypatch):
    results = {}
    for replay in (True, False):
        model, layers, batches = _bert_and_batches(tiny_bert)
        hessians, computed = _calibrate(model, layers, batches, replay, monkeypatch)
        results[replay] = hessians, computed, {n: m.weight.detach().clone() for n, m in layers.items()}
    (h_replay, computed_replay, w_replay), (h_full, computed_full, w_full) = results[True], results[False]
    assert list(h_replay) == list(h_full) and len(h_replay) == 6 * 2  # query..output.dense of 2 blocks
    for name in h_full:
        assert torch.equal(h_replay[name], h_full[name]), name
        assert torch.equal(w_replay[name], w_full[name]), name
    # every layer computes once per batch, with its pruned weights, plus once in each of the two probe passes on
    # the first batch (the model's chain check, the block's trace); the last block's last layer needs no pruned
    # outputs (nothing after it is calibrated). Recomputing: 2-5 times a batch.
    batches = 3
    last = "bert.encoder.layer.1.output.dense"
    assert computed_replay == dict.fromkeys(layers, batches + 2) | {last: 2}
    probes = 2 * len(layers)
    assert sum(computed_full.values()) - probes > 2.5 * (sum(computed_replay.values()) - probes)  # 30 vs 11 a batch


def test_replay_gives_the_same_weights_as_recomputing_a_cnn(monkeypatch):
    weights = {}
    for replay in (True, False):
        torch.manual_seed(0)
        model = ConvNet(4, channels=[8, 16], hidden=16).eval()
        layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
        g = torch.Generator().manual_seed(1)
        batches = [{"pixel_values": torch.randn(5, 1, 8, 8, generator=g)} for _ in range(3)]
        _calibrate(model, layers, batches, replay, monkeypatch)
        weights[replay] = {n: m.weight.detach().clone() for n, m in layers.items()}
    for name in weights[False]:
        assert torch.equal(weights[True][name], weights[False][name]), name


def test_a_module_called_twice_per_pass_is_never_replayed():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act, self.a, self.b = nn.Tanh(), nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.b(self.act(self.a(self.act(x))))

    model = Twice()
    trace = Trace(model, lambda m: m(torch.randn(2, 4)))
    assert trace.calls[model.act] == 2
    assert model.act not in trace.finished_before(float("inf"))
    assert trace.finished_before(trace.start[model.b]) == [model.a]


@pytest.mark.parametrize("inplace", [False, True])
def test_an_in_place_operation_after_a_replayed_module_changes_no_later_pass(inplace, monkeypatch):
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)

        def forward(self, x):
            h = self.a(x)
            if inplace:
                h += x  # modifies a's output in place: a replayed copy must not keep the change
            else:
                h = h + x
            return self.c(self.b(h).relu())

    hessians = {}
    for replay in (True, False):
        torch.manual_seed(0)
        model = Residual()
        layers = dict(model.named_children())
        batches = [{"x": torch.randn(3, 6)} for _ in range(2)]
        hessians[replay], _ = _calibrate(model, layers, batches, replay, monkeypatch)
    for name in hessians[False]:
        assert torch.equal(hessians[True][name], hessians[False][name]), name


@pytest.mark.parametrize("columns", [8, 384, 1000, 1536])
def test_the_hessian_from_its_upper_blocks_equals_2_xtx_over_n(columns):
    torch.manual_seed(0)
    hessian = Hessian(columns, torch.device("cpu"))
    rows = [torch.randn(50, columns), torch.randn(0, columns), torch.randn(70, columns)]
    for r in rows:
        hessian.add(r)
    x = torch.cat(rows).double()
    assert torch.equal(hessian.matrix, hessian.matrix.T)
    assert torch.allclose(hessian.matrix.double(), 2 * x.T @ x / len(x), atol=1e-5)


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
            module.weight.masked_fill_(parse_pattern("1x1").lowest(module.weight.abs(), 0.5), 0.0)

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
                module.weight.masked_fill_(parse_pattern("2:4").lowest(module.weight.abs(), 0.5), 0.0)

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
