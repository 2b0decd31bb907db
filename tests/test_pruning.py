"""Pruning, numerically: exact sparsity per pattern and domain, N:M and block structure, decay formulas,
exclusions, caps, masks that stay zero, pattern_lock, groups, heads and errors (the criteria: test_criteria.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.pruners import PatternLock, Pruner
from compress_sweeps.pruners.criteria import Magnitude, SnipMomentum
from compress_sweeps.pruners.schedules import Schedule, decayed_target
from compress_sweeps.run.measure import compression_report
from compress_sweeps.weights.patterns import parse_pattern, pattern_holds


class Net(nn.Module):
    """Three prunable Linear layers of different shapes and a classifier head the defaults keep dense."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
        self.classifier = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))


LAYERS = ["encoder.0.weight", "encoder.2.weight", "encoder.4.weight"]


def context(total_steps: int = 10) -> RunContext:
    return RunContext(total_steps=total_steps, num_labels=4, device=torch.device("cpu"))


def oneshot(model: nn.Module, **kwargs) -> Pruner:
    """Magnitude pruning at attach (step 0), before any training."""
    pruner = Pruner(**({"criterion": Magnitude, "start_step": 0, "end_step": 0} | kwargs))
    pruner.attach(model, context())
    return pruner


def sparsities(model: nn.Module) -> dict[str, float]:
    params = dict(model.named_parameters())
    return {name: float((params[name] == 0).float().mean()) for name in LAYERS}


def overall(model: nn.Module) -> float:
    params = dict(model.named_parameters())
    return sum(int((params[n] == 0).sum()) for n in LAYERS) / sum(params[n].numel() for n in LAYERS)


def train_steps(model: nn.Module, pruner, steps: range) -> None:
    """The trainer's hook order, with AdamW (its momentum would revive pruned weights without the masks)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in steps:
        loss = model(torch.randn(8, 32)).pow(2).mean()
        loss.backward()
        pruner.before_optimizer_step(step)
        optimizer.step()
        optimizer.zero_grad()
        pruner.after_optimizer_step(step)


@pytest.mark.parametrize("pattern", ["1x1", "4x1", "1x4", "2x2", "channel"])
@pytest.mark.parametrize("target", [0.25, 0.5, 0.8])
def test_local_sparsity_is_exact_per_layer(pattern, target):
    model = Net()
    oneshot(model, pattern=pattern, target_sparsity=target, prune_domain="local")
    for name, sparsity in sparsities(model).items():
        weight = dict(model.named_parameters())[name]
        groups = (
            weight.shape[0]
            if pattern == "channel"
            else weight.numel() // (4 if "x" in pattern[1:] and pattern != "1x1" else 1)
        )
        assert sparsity == pytest.approx(round(target * groups) / groups), name
        assert pattern_holds(weight, pattern)


@pytest.mark.parametrize("pattern", ["1x1", "4x1", "1x4", "2x2", "channel"])
@pytest.mark.parametrize("target", [0.25, 0.5, 0.8])
def test_global_sparsity_hits_the_target_within_one_group(pattern, target):
    model = Net()
    oneshot(model, pattern=pattern, target_sparsity=target, prune_domain="global")
    largest_group = 64 if pattern == "channel" else math.prod(int(x) for x in pattern.split("x"))
    total = sum(dict(model.named_parameters())[n].numel() for n in LAYERS)
    assert abs(overall(model) - target) <= largest_group / total
    assert overall(model) <= target + 1e-12  # never more than the budget
    assert all(pattern_holds(dict(model.named_parameters())[n], pattern) for n in LAYERS)


@pytest.mark.parametrize(("pattern", "n", "m"), [("2:4", 2, 4), ("1:4", 1, 4), ("4:8", 4, 8)])
@pytest.mark.parametrize("domain", ["local", "global"])
def test_nm_groups_hold_at_most_n_nonzeros(pattern, n, m, domain):
    model = Net()
    oneshot(model, pattern=pattern, prune_domain=domain)
    for name in LAYERS:
        weight = dict(model.named_parameters())[name]
        runs = (weight != 0).reshape(weight.shape[0], -1, m).sum(-1)
        assert int(runs.max()) <= n
        assert float((weight == 0).float().mean()) == pytest.approx(1 - n / m)
    assert overall(model) == pytest.approx(1 - n / m)


def test_nm_ramps_up_inside_the_pattern_and_ends_on_it():
    model = Net()
    pruner = Pruner(criterion=Magnitude, pattern="2:4", start_step=1, end_step=9, update_frequency=2)
    pruner.attach(model, context())
    for step in range(1, 10):
        pruner.after_optimizer_step(step)
        for name in LAYERS:  # on the way, no run of 4 loses more than its 2 allowed weights
            assert int((dict(model.named_parameters())[name] == 0).reshape(-1, 4).sum(-1).max()) <= 2
        assert overall(model) == pytest.approx(pruner.groups[0].current, abs=1 / 512)
    assert overall(model) == 0.5
    assert all(pattern_holds(dict(model.named_parameters())[n], "2:4") for n in LAYERS)


def test_block_zeros_come_in_whole_blocks():
    model = Net()
    oneshot(model, pattern="4x2", target_sparsity=0.6, prune_domain="local")
    weight = model.encoder[2].weight  # 32 x 64
    zeros = (weight == 0).reshape(8, 4, 32, 2).sum(dim=(1, 3))
    assert set(zeros.unique().tolist()) == {0, 8}
    assert not pattern_holds(weight, "8x2")  # the checker is not vacuous: pairs of 4-row blocks differ


def test_pattern_checker_rejects_broken_patterns():
    weight = torch.ones(4, 8)
    weight[0, 0] = 0
    assert pattern_holds(weight, "1x1")
    assert not any(pattern_holds(weight, p) for p in ("4x1", "1x2", "channel", "2:4"))
    weight = torch.ones(4, 8)
    weight[:, [1, 2, 5, 6]] = 0  # two zeros in every run of four, whole columns
    assert all(pattern_holds(weight, p) for p in ("2:4", "4x1", "2x1"))
    assert not any(pattern_holds(weight, p) for p in ("1:4", "4x2", "1x2"))  # (0, 1) mixes a zero and a one


@pytest.mark.parametrize(
    ("decay", "middle"),
    [
        ("linear", 0.4),
        ("cos", 0.8 * (1 - math.cos(math.pi / 2)) / 2),
        ("exp", 1 - 0.2**0.5),
        ("cube", 0.8 * (1 - 0.5**3)),
    ],
)
def test_decay_curves_follow_their_formulas(decay, middle):
    schedule = Schedule(start_step=10, end_step=30, update_frequency=5, sparsity_decay=decay).resolve(40)
    assert schedule.target(10, 0.8) == 0.0
    assert schedule.target(20, 0.8) == pytest.approx(middle)
    assert schedule.target(30, 0.8) == 0.8
    assert decayed_target(0.8, 0.25, decay) < decayed_target(0.8, 0.75, decay)


def test_schedule_fractions_and_update_steps():
    schedule = Schedule(start_step=0.1, end_step=0.7, update_frequency=0.05).resolve(100)
    assert (schedule.start, schedule.end, schedule.every) == (10, 70, 5)
    assert [s for s in range(101) if schedule.prunes_at(s)] == list(range(10, 71, 5))
    smoke = Schedule(start_step=0.1, end_step=0.7, update_frequency=0.05).resolve(3)
    assert (smoke.start, smoke.end, smoke.every) == (1, 2, 1)  # fractions never resolve to step 0
    odd = Schedule(start_step=2, end_step=9, update_frequency=3).resolve(10)
    assert [s for s in range(11) if odd.prunes_at(s)] == [2, 5, 8, 9]  # end_step always updates
    with pytest.raises(ValueError, match="pruner.end_step"):
        Schedule(start_step=5, end_step=3).resolve(10)
    with pytest.raises(ValueError, match="pruner.start_step"):
        Schedule(start_step=1.5)


def test_excluded_layers_stay_dense():
    model = Net()
    oneshot(model, pattern="1x1", target_sparsity=0.9)
    assert float((model.classifier.weight == 0).float().mean()) == 0.0
    assert overall(model) == pytest.approx(0.9, abs=1e-3)
    model = Net()
    oneshot(model, pattern="1x1", target_sparsity=0.5, exclude=["classifier", r"encoder\.2"])
    assert float((model.encoder[2].weight == 0).float().mean()) == 0.0


def test_max_sparsity_per_layer_caps_and_moves_the_budget():
    model = Net()
    with torch.no_grad():
        model.encoder[4].weight.mul_(1e-3)  # the smallest magnitudes: global pruning would take all of it
    oneshot(model, pattern="1x1", target_sparsity=0.5, max_sparsity_per_layer=0.6)
    assert max(sparsities(model).values()) <= 0.6
    assert sparsities(model)["encoder.4.weight"] == pytest.approx(math.floor(0.6 * 512) / 512)
    assert overall(model) == pytest.approx(0.5, abs=1e-3)  # the cap moved the rest of the budget elsewhere


def test_masked_weights_stay_exactly_zero_while_training_on():
    model = Net()
    pruner = Pruner(
        criterion=SnipMomentum, pattern="4x1", target_sparsity=0.7, start_step=2, end_step=6, update_frequency=2
    )
    pruner.attach(model, context(12))
    train_steps(model, pruner, range(1, 7))
    zeros = {n: dict(model.named_parameters())[n] == 0 for n in LAYERS}
    assert overall(model) == pytest.approx(0.7, abs=4 / 3584)
    train_steps(model, pruner, range(7, 13))
    for name, was_zero in zeros.items():
        assert bool((dict(model.named_parameters())[name][was_zero] == 0).all()), name
    assert pruner.metrics()["pruner/sparsity"] == pytest.approx(overall(model))
    pruner.finalize(model)
    assert not hasattr(model.encoder[0], "weight_mask")
    assert all(pattern_holds(dict(model.named_parameters())[n], "4x1") for n in LAYERS)


def test_pattern_lock_never_revives_a_zero():
    model = Net()
    oneshot(model, pattern="1x1", target_sparsity=0.6).finalize(model)
    zeros = {n: dict(model.named_parameters())[n] == 0 for n in LAYERS}
    lock = PatternLock()
    lock.attach(model, context())
    train_steps(model, lock, range(1, 8))
    for name, was_zero in zeros.items():
        weight = dict(model.named_parameters())[name]
        assert bool((weight[was_zero] == 0).all()), name
        assert bool((weight[~was_zero] != 0).any())  # the rest did train
    assert lock.metrics()["pruner/sparsity"] == pytest.approx(overall(model))


def test_several_groups_prune_side_by_side():
    model = Net()
    # an N:M group must not inherit a contradicting top-level target: null = its own 1 - N/M
    groups = [
        {"include": [r"encoder\.0"], "pattern": "2:4", "target_sparsity": None},
        {"include": [r"encoder\.[24]"], "target_sparsity": 0.25},
    ]
    pruner = oneshot(model, pattern="1x4", target_sparsity=0.75, prune_domain="local", groups=groups)
    assert sparsities(model) == pytest.approx({LAYERS[0]: 0.5, LAYERS[1]: 0.25, LAYERS[2]: 0.25})
    assert pruner.spec().patterns == {LAYERS[0]: "2:4", LAYERS[1]: "1x4", LAYERS[2]: "1x4"}
    report = compression_report(model, patterns=pruner.spec().patterns)
    assert report["pattern_holds"] and report["pattern"] == pruner.spec().patterns
    assert report["sparsity"] == pytest.approx(overall(model))


def test_head_pruning_zeroes_whole_heads(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)  # 2 layers x 2 heads of 16
    pruner = oneshot(model, pattern="head", target_sparsity=0.5, prune_domain="local")
    patterns = pruner.spec().patterns
    assert len(patterns) == 8 and patterns["bert.encoder.layer.0.attention.self.query.weight"] == "16x32"
    report = compression_report(pruner.finalize(model), patterns=patterns)
    assert report["pattern_holds"] and report["sparsity"] == 0.5
    query = model.bert.encoder.layer[0].attention.self.query.weight.reshape(2, -1)
    assert sorted((query == 0).all(dim=1).tolist()) == [False, True]  # one whole head of two


@pytest.mark.parametrize(
    ("kwargs", "key", "value", "problem"),
    [
        ({"pattern": "2:4", "target_sparsity": 0.8}, "pruner.target_sparsity", 0.8, "contradicts pruner.pattern=2:4"),
        ({"pattern": "3x"}, "pruner.pattern", "3x", "is not a pattern"),
        ({"pattern": "4x1", "target_sparsity": 1.2}, "pruner.target_sparsity", 1.2, "is out of range"),
        ({"prune_domain": "everywhere"}, "pruner.prune_domain", "everywhere", "is unknown"),
        ({"sparsity_decay": "step"}, "pruner.sparsity_decay", "step", "is unknown"),
        ({"groups": [{"pattren": "2:4"}]}, "pruner.groups[0]", ["pattren"], "has unknown keys"),
        ({"taget_sparsity": 0.5}, "pruner", ["taget_sparsity"], "has unknown keys"),
        ({"target_sparsity": 0.5, "min_sparsity_per_layer": 0.6}, "pruner.min_sparsity_per_layer", 0.6, "exceeds"),
        ({"layer_types": ["Linear", "LSTM"]}, "pruner.layer_types", ["Linear", "LSTM"], "is out of range"),
        ({"include": ["(unclosed"]}, "pruner.include", ["(unclosed"], "is invalid"),
    ],
)
def test_bad_values_are_named(kwargs, key, value, problem):
    with pytest.raises(ConfigError) as caught:
        Pruner(**({"criterion": Magnitude} | kwargs))
    assert (caught.value.key, caught.value.value) == (key, value)
    assert caught.value.problem.startswith(problem)


@pytest.mark.parametrize(("alpha", "beta", "key"), [(0.0, 0.9, "alpha"), (1.0, 1.5, "beta")])
def test_snip_momentum_constants_are_checked(alpha, beta, key):
    with pytest.raises(ConfigError) as caught:
        SnipMomentum(alpha=alpha, beta=beta)
    assert caught.value.key == f"pruner.criterion.{key}"


def test_incompatible_layers_are_named_or_skipped():
    with pytest.raises(ValueError, match="layer 'encoder.4'"):
        oneshot(Net(), pattern="32x1")  # encoder.4 has 16 output rows
    model = Net()
    pruner = oneshot(model, pattern="32x1", target_sparsity=0.5, skip_incompatible=True)
    assert pruner.groups[0].skipped == ["encoder.4"] and sparsities(model)["encoder.4.weight"] == 0.0


def test_parse_pattern_convention():
    assert parse_pattern("4x1").rows == 4 and parse_pattern("4x1").cols == 1
    assert parse_pattern("2:4").max_fraction == 0.5
