"""Pruning criteria by hand computation: magnitude, gradient, snip, snip_momentum and movement scores, and the
gradient criteria refusing to prune before any gradient."""

from __future__ import annotations

import pytest
import torch

from compress_sweeps.errors import ConfigError
from compress_sweeps.pruners import Pruner
from compress_sweeps.pruners.criteria import Gradient, Magnitude, Movement, Snip, SnipMomentum


def test_snip_momentum_update_equals_hand_computation():
    criterion = SnipMomentum(alpha=0.5, beta=0.8)
    w, g1, g2 = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 0.5, -1.0]), torch.tensor([-1.0, 2.0, 0.0])
    criterion.observe([w], [g1])
    criterion.observe([w], [g2])
    # step 1: 0.5 * |w * g1| = [0.25, 0.5, 1.5]; step 2: 0.8 * that + 0.5 * |w * g2| = [0.7, 2.4, 1.2]
    assert torch.allclose(criterion.scores([w])[0], torch.tensor([0.7, 2.4, 1.2]))


@pytest.mark.parametrize("criterion", [Gradient, Snip, SnipMomentum, Movement])
def test_gradient_criteria_refuse_to_prune_before_any_gradient(criterion):
    with pytest.raises(ConfigError) as caught:  # at construction: before any model or data is loaded
        Pruner(criterion=criterion, start_step=0, end_step=0)
    assert (caught.value.key, caught.value.value, caught.value.problem) == (
        "pruner.start_step",
        0,
        "prunes before any gradient",
    )
    with pytest.raises(RuntimeError, match="before any gradient"):  # the criterion itself refuses too
        criterion().scores([torch.ones(2, 2)])


W = torch.tensor([1.0, -2.0, 3.0])
G1, G2 = torch.tensor([0.5, 1.0, -1.0]), torch.tensor([-1.0, 0.5, 2.0])


def test_gradient_scores_are_the_latest_gradient_magnitude():
    criterion = Gradient()
    criterion.observe([W], [G1])
    criterion.observe([W], [G2])
    assert torch.equal(criterion.scores([W])[0], torch.tensor([1.0, 0.5, 2.0]))


def test_snip_scores_are_the_latest_weight_times_gradient_magnitude():
    criterion = Snip()
    criterion.observe([W], [G1])
    criterion.observe([W], [G2])
    assert torch.equal(criterion.scores([W])[0], torch.tensor([1.0, 1.0, 6.0]))  # |W * G2|


def test_movement_scores_sum_minus_weight_times_gradient():
    """Movement keeps weights moving away from zero: -W*G > 0 when the update (-lr*G) grows |W|."""
    criterion = Movement()
    criterion.observe([W], [G1])
    criterion.observe([W], [G2])
    expected = -(W * G1) - (W * G2)  # [-0.5 + 1, 2 + 1, 3 - 6]
    assert torch.equal(criterion.scores([W])[0], expected)
    assert torch.equal(expected, torch.tensor([0.5, 3.0, -3.0]))
    # weight 0 is positive and its gradients push it up on balance (sum G < 0): a positive score, kept before 2
    assert criterion.scores([W])[0].argsort().tolist()[0] == 2


def test_magnitude_scores_are_absolute_weights():
    assert torch.equal(Magnitude().scores([W])[0], torch.tensor([1.0, 2.0, 3.0]))
