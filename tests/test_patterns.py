"""Patterns answer what the pruners ask (which weights are lowest, a fixed sparsity, a group's span, whether extra
zeros keep them holding): numeric checks per pattern, and no module outside weights/patterns/ asks a pattern its
type."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from compress_sweeps.errors import ConfigError
from compress_sweeps.pruners.oneshot import Goal
from compress_sweeps.weights.patterns import parse_pattern, resolve_sparsity

SRC = Path(__file__).resolve().parents[1] / "src" / "compress_sweeps"
SCORES = torch.tensor(
    [
        [1.0, 9.0, 2.0, 8.0],
        [3.0, 7.0, 4.0, 6.0],
        [5.0, 0.0, 9.0, 1.0],
        [2.0, 2.0, 0.5, 8.0],
    ]
)


def test_unstructured_prunes_the_lowest_over_the_matrix_or_per_row():
    pattern = parse_pattern("1x1")
    assert pattern.lowest(SCORES, 0.25).sum() == 4
    assert sorted(SCORES[pattern.lowest(SCORES, 0.25)].tolist()) == [0.0, 0.5, 1.0, 1.0]
    per_row = pattern.lowest(SCORES, 0.25, per_row=True)
    assert per_row.sum(dim=1).tolist() == [1, 1, 1, 1]  # every row loses one weight
    assert SCORES[per_row].tolist() == [1.0, 3.0, 0.0, 0.5]


@pytest.mark.parametrize(("reduce", "pruned_column"), [("sum", 0), ("mean", 0), ("max", 1)])
def test_a_block_is_scored_by_its_reduction(reduce, pruned_column):
    """2x1 blocks, one per column: column 0 sums to 1 (mean 0.5) with a max of 10, column 1 sums to 8 (mean 4)
    with a max of 4: the sum and the mean prune column 0, the max column 1."""
    scores = torch.tensor([[10.0, 4.0], [-9.0, 4.0]])
    pattern = parse_pattern("2x1")
    pruned = pattern.lowest(scores, 0.5, reduce=reduce)
    assert pruned[:, pruned_column].all() and pruned.sum() == 2


def test_n_m_prunes_within_every_run_and_fixes_the_sparsity():
    pattern = parse_pattern("2:4")
    pruned = pattern.lowest(SCORES, 0.9)  # the requested sparsity cannot change a choice made within each run
    assert pruned.sum(dim=1).tolist() == [2, 2, 2, 2]
    assert SCORES[pruned].tolist() == [1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 2.0, 0.5]
    assert pattern.fixed_sparsity == 0.5 and pattern.span == 4 and pattern.keeps_holding_with_more_zeros


def test_channel_prunes_whole_rows_and_has_no_row_comparison():
    pattern = parse_pattern("channel")
    pruned = pattern.lowest(SCORES, 0.25)
    assert pruned[3].all() and pruned.sum() == 4  # row sums 20, 20, 15, 12.5
    assert parse_pattern("channel").span is None
    with pytest.raises(ValueError, match="no per-row comparison"):
        pattern.lowest(SCORES, 0.25, per_row=True)


def test_a_goal_prunes_through_its_pattern():
    goal = Goal(parse_pattern("1x2"), 0.5, "max")
    pruned = goal.lowest(SCORES)
    assert pruned.sum() == 8 and parse_pattern("1x2").holds(torch.where(pruned, 0.0, 1.0))


def test_only_a_pattern_that_fixes_the_sparsity_refuses_another_target():
    assert resolve_sparsity(parse_pattern("4x1"), None, 0.9, "pruner.target_sparsity") == 0.9
    assert resolve_sparsity(parse_pattern("4x1"), 0.7, 0.9, "pruner.target_sparsity") == 0.7
    assert resolve_sparsity(parse_pattern("2:4"), None, 0.9, "pruner.target_sparsity") == 0.5
    with pytest.raises(ConfigError, match="contradicts pruner.groups\\[1\\].pattern=2:4") as caught:
        resolve_sparsity(parse_pattern("2:4"), 0.7, 0.9, "pruner.groups[1].target_sparsity")
    assert caught.value.key == "pruner.groups[1].target_sparsity"


def test_no_module_asks_a_pattern_its_type():
    """Patterns carry their behaviour: a new one is a class in weights/patterns/, not a branch elsewhere."""
    switch = re.compile(r"isinstance\([^)]*(BlockPattern|NMPattern|ChannelPattern)")
    found = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.parent.name != "patterns" and switch.search(path.read_text())
    ]
    assert not found
