"""`block_reduce` is Intel's block pooling (`pooling_type` avg | max over |W|): an NxM block's score is the mean, the
sum or the max of its elements' scores, and the pruner removes the blocks those scores rank lowest."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress_sweeps.hooks import RunContext
from compress_sweeps.pruners import Pruner
from compress_sweeps.pruners.criteria import Magnitude


def pruner_on(weight: torch.Tensor, reduce: str, **settings) -> tuple[nn.Sequential, Pruner]:
    """A magnitude Pruner (4x1, oneshot at attach, per layer) on one Linear layer holding `weight`."""
    model = nn.Sequential(nn.Linear(weight.shape[1], weight.shape[0]))
    with torch.no_grad():
        model[0].weight.copy_(weight)
    base = {"pattern": "4x1", "block_reduce": reduce, "prune_domain": "local", "start_step": 0, "end_step": 0}
    pruner = Pruner(Magnitude, **(base | {"exclude": ()} | settings))
    pruner.attach(model, RunContext(total_steps=0, num_labels=2, device=torch.device("cpu")))
    return model, pruner


@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
def test_a_4x1_block_scores_the_mean_sum_or_max_of_its_elements(reduce):
    torch.manual_seed(0)
    scores = torch.rand(8, 12)
    _, pruner = pruner_on(torch.ones(8, 12), reduce, target_sparsity=0.5)
    [target] = pruner.groups[0].targets
    target.masks[0].fill_(1.0)  # nothing pruned: the group scores are the plain reductions
    got = target.group_scores([scores]).reshape(2, 12)  # row-major over the (8/4, 12) block grid
    blocks = scores.reshape(2, 4, 12)  # [block row, row in block, column]
    expected = {"mean": blocks.mean(1), "sum": blocks.sum(1), "max": blocks.amax(1)}[reduce]
    assert torch.allclose(got, expected)
    column = scores[4:8, 5]  # one block by hand: rows 4-7 of column 5
    assert float(got[1, 5]) == pytest.approx(
        float({"mean": column.mean(), "sum": column.sum(), "max": column.max()}[reduce])
    )


# four 4x1 blocks: A has one large |W| and three tiny ones, B is flat; mean ranks A below B, max ranks B below A
WEIGHT = torch.tensor(
    [[-10.0, 1.0], [0.1, 1.0], [0.1, -1.0], [-0.1, 1.0], [3.0, 5.0], [-3.0, 5.0], [3.0, 5.0], [3.0, -5.0]]
)


@pytest.mark.parametrize(("reduce", "pruned"), [("mean", "A"), ("sum", "A"), ("max", "B")])
def test_the_pooling_decides_which_block_is_pruned(reduce, pruned):
    """Half of the four blocks pruned: C (all |W| = 1) and A (mean 2.575, max 10) or B (mean 3, max 3)."""
    model, _ = pruner_on(WEIGHT, reduce, target_sparsity=0.5)
    zero = (model[0].weight == 0).reshape(2, 4, 2).all(dim=1)  # [block row, column]
    blocks = {"A": bool(zero[0, 0]), "B": bool(zero[1, 0]), "C": bool(zero[0, 1]), "D": bool(zero[1, 1])}
    assert blocks == {"A": pruned == "A", "B": pruned == "B", "C": True, "D": False}
