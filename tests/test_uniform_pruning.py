"""Uniform pruning (`prune_domain: uniform`, Intel's uniform magnitude): every block of every row holds the same
sparsity, at every mask update, in 1x1, 4x1 and N:M; its keys are checked; a digits run with it passes the gate."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import CNN_SMOKE, compose_cfg
from safetensors.torch import load_file
from torch import nn

from compress_sweeps import train
from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.pruners import Pruner
from compress_sweeps.pruners.criteria import Magnitude

CPU = torch.device("cpu")


def layer(out: int = 16, inp: int = 48) -> nn.Sequential:
    """One Linear layer (named `0`) of an `(out, inp)` weight."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inp, out))


def uniform(model: nn.Module, total_steps: int = 0, **settings) -> Pruner:
    """A magnitude Pruner with `prune_domain: uniform`, oneshot at attach unless `settings` say otherwise."""
    base = {"pattern": "1x1", "prune_domain": "uniform", "start_step": 0, "end_step": 0, "exclude": ()}
    pruner = Pruner(Magnitude, **(base | settings))
    pruner.attach(model, RunContext(total_steps=total_steps, num_labels=2, device=CPU))
    return pruner


def zeros_per_block(weight: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """Zero count of every block of `rows` output rows x `columns` input columns."""
    out, inp = weight.shape
    return (weight == 0).reshape(out // rows, rows, inp // columns, columns).sum(dim=(1, 3))


def test_every_block_of_every_row_prunes_the_same_smallest_magnitudes():
    """Intel's uniform magnitude on a (16, 48) weight with block_size 8 at 0.75: each run of 8 consecutive weights
    of a row keeps its 2 largest |W|."""
    model = layer()
    dense = model[0].weight.detach().clone()
    uniform(model, target_sparsity=0.75, uniform_block_size=8)
    assert torch.equal(zeros_per_block(model[0].weight, 1, 8), torch.full((16, 6), 6))
    blocks = dense.abs().reshape(-1, 8)
    threshold = blocks.kthvalue(6, dim=1).values.unsqueeze(1)  # Intel: keep |W| > the 6th smallest of the block
    assert torch.equal(model[0].weight != 0, (blocks > threshold).reshape(16, 48))


def test_a_null_block_is_the_whole_row():
    model = layer()
    uniform(model, target_sparsity=0.75)
    assert torch.equal((model[0].weight == 0).sum(dim=1), torch.full((16,), 36))


def test_4x1_blocks_are_uniform_across_each_band_of_rows():
    model = layer()
    uniform(model, pattern="4x1", target_sparsity=0.5, uniform_block_size=12)
    per_block = zeros_per_block(model[0].weight, 4, 12)  # 4 rows x 12 columns = 12 groups of 4x1, 6 pruned
    assert torch.equal(per_block, torch.full((4, 4), 6 * 4))
    assert bool((zeros_per_block(model[0].weight, 4, 1) % 4 == 0).all())  # whole 4x1 blocks


def test_every_mask_update_of_a_schedule_is_uniform_and_masks_only_grow():
    model = layer()
    pruner = uniform(model, total_steps=6, target_sparsity=0.75, uniform_block_size=8, start_step=0, end_step=6,
                     update_frequency=2, sparsity_decay="linear")  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = torch.zeros_like(model[0].weight, dtype=torch.bool)
    for step in range(1, 7):
        model(torch.randn(4, 48)).square().sum().backward()
        pruner.before_optimizer_step(step)
        optimizer.step()
        optimizer.zero_grad()
        pruner.after_optimizer_step(step)
        counts = zeros_per_block(model[0].weight, 1, 8)
        assert bool((counts == counts[0, 0]).all()), step  # every block alike
        assert counts[0, 0] == round(pruner.groups[0].current * 8)
        assert bool((model[0].weight[before] == 0).all())
        before = model[0].weight == 0
    assert counts[0, 0] == 6


def test_n_m_with_uniform_blocks_of_whole_runs():
    model = layer()
    uniform(model, pattern="2:4", uniform_block_size=8)
    assert bool(((model[0].weight != 0).reshape(16, 12, 4).sum(-1) == 2).all())
    assert torch.equal(zeros_per_block(model[0].weight, 1, 8), torch.full((16, 6), 4))


@pytest.mark.parametrize(
    ("settings", "key", "problem"),
    [
        ({"prune_domain": "local", "uniform_block_size": 8}, "pruner.uniform_block_size", None),
        ({"uniform_block_size": 0}, "pruner.uniform_block_size", None),
        ({"pattern": "channel"}, "pruner.prune_domain", "does not fit pruner.pattern=channel"),
        ({"pattern": "head"}, "pruner.prune_domain", "does not fit pruner.pattern=head"),
    ],
)
def test_settings_that_cannot_be_uniform_are_refused(settings, key, problem):
    with pytest.raises(ConfigError) as caught:
        Pruner(Magnitude, **({"prune_domain": "uniform", "target_sparsity": 0.5} | settings))
    assert caught.value.key == key
    assert problem is None or problem in str(caught.value)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"uniform_block_size": 10, "target_sparsity": 0.5}, "does not fit layer '0'"),  # 48 columns
        ({"pattern": "1x4", "uniform_block_size": 6, "target_sparsity": 0.5}, "does not fit layer '0'"),
        ({"uniform_block_size": 4, "target_sparsity": 0.9}, "cannot reach the target"),  # 4 of 4 or 3 of 4
    ],
)
def test_blocks_that_do_not_fit_a_layer_stop_at_attach(settings, problem):
    with pytest.raises(ConfigError) as caught:
        uniform(layer(), **settings)
    assert caught.value.key == "pruner.uniform_block_size" and problem in str(caught.value)


@pytest.mark.parametrize("pruner", ["magnitude", "neural_wiring"])
def test_a_digits_run_with_uniform_blocks_passes_the_gate(tmp_path, pruner):
    """Intel's uniform_magnitude and uniform_neural_wiring: the conv (288 columns) and fc (256) layers in blocks of
    16 at 75%."""
    overrides = [f"pruner={pruner}", "pruner.pattern=1x1", "pruner.prune_domain=uniform", "pruner.target_sparsity=0.75"]
    overrides += ["pruner.uniform_block_size=16", "pruner.exclude=[classifier,features.0]"]
    train.run(compose_cfg([*CNN_SMOKE, *overrides], output_dir=tmp_path / "run"))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed" and results["verified"]["ok"]
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert sorted(results["compression"]["layers"]) == ["fc.weight", "features.4.weight"]
    for name in results["compression"]["layers"]:
        matrix = weights[name].reshape(weights[name].shape[0], -1)
        assert torch.equal(zeros_per_block(matrix, 1, 16), torch.full((matrix.shape[0], matrix.shape[1] // 16), 12))
