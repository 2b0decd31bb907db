"""RIA (pruner/method=ria): its score equals a hand computation, it prunes within rows at the target in the
pattern, and a run with it is built, checked and recounted like every one-shot method."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_cfg
from oneshot_models import ModelOnX, Rows
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.pruners.oneshot import OneShotPruner
from compress_sweeps.pruners.oneshot.calibration import FeatureNorms
from compress_sweeps.pruners.oneshot.method import Goal
from compress_sweeps.pruners.oneshot.ria import RIA, ria_scores
from compress_sweeps.run.build import build, check
from compress_sweeps.weights.patterns import parse_pattern


def test_score_equals_hand_computation():
    w = torch.tensor([[1.0, -3.0], [2.0, 0.0]])  # row sums 4, 2; column sums 3, 3
    norms = torch.tensor([4.0, 1.0])  # ||X_j||^0.5: 2, 1
    expected = torch.tensor([[(1 / 4 + 1 / 3) * 2, (3 / 4 + 3 / 3) * 1], [(2 / 2 + 2 / 3) * 2, 0.0]])
    assert torch.allclose(ria_scores(w, norms, 0.5), expected)


@pytest.mark.parametrize("pattern", ["1x1", "2:4", "1x2"])
def test_each_row_loses_the_same_share_in_the_pattern(pattern):
    torch.manual_seed(0)
    weight = torch.randn(8, 16)
    statistic = FeatureNorms(16, torch.device("cpu"))
    statistic.add(torch.randn(32, 16))
    goal = Goal(parse_pattern(pattern), 0.5)
    pruned_weight, pruned = RIA().prune(weight, statistic, goal, torch.zeros_like(weight, dtype=torch.bool))
    assert pruned.sum(dim=1).tolist() == [8] * 8 and parse_pattern(pattern).holds(pruned_weight)
    assert torch.equal(pruned_weight, weight.masked_fill(pruned, 0.0))  # no weight is updated


def test_a_run_with_it_is_built_and_checked():
    cfg = compose_cfg(["task=digits", "model=cnn", "pruner=wanda", "pruner/method=ria", "pruner.method.power=1"])
    parts = build(cfg)
    check(parts, cfg)
    assert isinstance(parts.compressors.members[0].method, RIA) and parts.compressors.members[0].method.power == 1


def test_bad_values_and_patterns_are_named():
    with pytest.raises(ConfigError, match="pruner.method.power=-1 is out of range"):
        RIA(power=-1)
    with pytest.raises(ConfigError, match="pruner.pattern=channel does not suit ria"):
        OneShotPruner(method=RIA(), pattern="channel")


def test_it_prunes_a_model_through_the_pruner():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    context = RunContext(total_steps=0, num_labels=4, device=torch.device("cpu"), input_keys=("x",),
                         train_set=Rows(torch.randn(64, 16)))  # fmt: skip
    pruner = OneShotPruner(method=RIA(), pattern="2:4", exclude=[], calibration_examples=64)
    pruner.attach(ModelOnX(model), context)
    assert pruner.metrics()["pruner/sparsity"] == 0.5
