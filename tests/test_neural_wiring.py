"""Discovering Neural Wirings: pruned weights get their straight-through gradient and move, come back at a later
mask update, the final sparsity and pattern hold exactly, a run passes the verification gate, a checkpoint restores
the dense weights."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import CNN_SMOKE, compose_cfg
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from compress_sweeps import train
from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import Compressors, RunContext
from compress_sweeps.pruners import Pruner
from compress_sweeps.pruners.criteria import Magnitude, SnipMomentum
from compress_sweeps.pruners.gradual.neural_wiring import NeuralWiring
from compress_sweeps.run.checkpoint import Checkpoints, EpochBatches, TrainingState
from compress_sweeps.run.verify import sparsity_checks
from compress_sweeps.weights.patterns import pattern_holds


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 4))


def wiring(model: nn.Module, total_steps: int = 10, **settings) -> NeuralWiring:
    method = NeuralWiring(Magnitude, **({"pattern": "1x1", "exclude": ()} | settings))
    method.attach(model, RunContext(total_steps=total_steps, num_labels=4, device=torch.device("cpu")))
    return method


def step(model: nn.Module, method, optimizer: torch.optim.Optimizer, t: int, seed: int = 0) -> None:
    """One optimizer step in the trainer's hook order."""
    generator = torch.Generator().manual_seed(seed + t)
    x, y = torch.randn(32, 16, generator=generator), torch.randint(0, 4, (32,), generator=generator)
    nn.functional.cross_entropy(model(x), y).backward()
    method.before_optimizer_step(t)
    optimizer.step()
    optimizer.zero_grad()
    method.after_optimizer_step(t)


def test_a_pruned_weight_gets_its_gradient_and_the_optimizer_moves_it():
    model = net()
    method = wiring(model, target_sparsity=0.5, start_step=0, end_step=0, prune_domain="local")  # at attach
    weight, mask = model[0].weight, method.masks[0]
    pruned = mask == 0
    assert pruned.float().mean() == 0.5 and bool((weight[pruned] == 0).all())
    dense = method.dense[0].clone()
    assert bool((dense[pruned] != 0).all())  # the dense copy keeps the pruned values
    x = torch.randn(32, 16)
    nn.functional.cross_entropy(model(x), torch.randint(0, 4, (32,))).backward()
    grad = weight.grad.clone()
    assert (grad[pruned] != 0).float().mean() > 0.5  # the gradient at the masked value: straight through
    method.before_optimizer_step(1)
    assert torch.equal(weight, dense)  # the optimizer sees every weight's own value
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    method.after_optimizer_step(1)
    assert torch.allclose(method.dense[0], dense - 0.1 * grad)  # pruned weights moved by their gradient too
    assert torch.equal(weight, method.dense[0] * mask) and bool((weight[pruned] == 0).all())


@pytest.mark.parametrize("cls", [NeuralWiring, Pruner])
def test_a_weight_pruned_at_one_update_comes_back_at_the_next(cls):
    """Mask updates at steps 0, 1 and 2 (linear: nothing, half the target, the target). A pruned weight whose value
    grows past every kept one is kept at step 2 with DNW; the magnitude Pruner's masks only grow."""
    model = net()
    settings = {"pattern": "1x1", "target_sparsity": 0.5, "start_step": 0, "end_step": 2, "update_frequency": 1}
    settings |= {"sparsity_decay": "linear", "prune_domain": "local", "exclude": ()}
    method = cls(Magnitude, **settings)
    method.attach(model, RunContext(total_steps=4, num_labels=4, device=torch.device("cpu")))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the values change only where the test sets them
    step(model, method, optimizer, 1)
    mask = method.masks[0] if cls is NeuralWiring else method.groups[0].masks[0]
    assert 0.24 < float((mask == 0).float().mean()) < 0.26
    row, col = map(int, (mask == 0).nonzero()[0])
    with torch.no_grad():  # the pruned weight's own value grows (its dense value for DNW)
        values = method.dense[0] if cls is NeuralWiring else model[0].weight
        values[row, col] = 10.0
    step(model, method, optimizer, 2)
    assert float((mask == 0).float().mean()) == 0.5
    if cls is NeuralWiring:
        assert mask[row, col] == 1 and model[0].weight[row, col] == 10.0
        assert method.metrics()["pruner/regrown"] > 0
    else:
        assert mask[row, col] == 0 and model[0].weight[row, col] == 0.0


@pytest.mark.parametrize(
    "settings",
    [
        {"pattern": "1x1", "target_sparsity": 0.75, "prune_domain": "local"},
        {"pattern": "4x1", "target_sparsity": 0.5, "prune_domain": "global"},
        {"pattern": "2:4", "prune_domain": "local"},
        {"pattern": "1x1", "target_sparsity": 0.75, "prune_domain": "uniform", "uniform_block_size": 8},
    ],
)
def test_final_sparsity_and_pattern_hold_exactly_after_finalize(settings):
    model = net()
    schedule = {"start_step": 2, "end_step": 8, "update_frequency": 2}
    method = wiring(model, **(schedule | settings))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for t in range(1, 11):
        step(model, method, optimizer, t)
        for weight, dense, mask in zip(method.weights, method.dense, method.masks, strict=True):
            assert t < 2 or torch.equal(weight, dense * mask)  # from the first mask update on: dense * mask
    method.finalize(model)
    assert not any(hasattr(m, "weight_mask") for m in model.modules()) and method.dense == []
    spec = method.spec()
    assert spec.method == "NeuralWiring" and not spec.keeps_zeros
    weights = {name: p.detach() for name, p in model.named_parameters()}
    [promise] = spec.sparsity
    assert all(check["ok"] for check in sparsity_checks(weights, promise, quantized=False))
    target = promise.target
    for name, label in promise.patterns.items():
        assert pattern_holds(weights[name], label)
        if settings["prune_domain"] != "global":  # every layer (and every uniform block) exactly at the target
            assert float((weights[name] == 0).float().mean()) == target


def test_only_the_magnitude_criterion_is_taken():
    with pytest.raises(ConfigError) as caught:
        NeuralWiring(SnipMomentum)
    assert caught.value.key == "pruner.criterion"


def test_a_digits_run_passes_the_verification_gate(tmp_path):
    train.run(compose_cfg([*CNN_SMOKE, "pruner=neural_wiring", "pruner.pattern=1x1"], output_dir=tmp_path / "run"))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed" and results["verified"]["ok"]
    assert results["compression"]["spec"][0]["method"] == "NeuralWiring"
    assert results["compression"]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert "pruner/regrown" in results["metrics"]


def _toy(seed: int = 0):
    """A net with DNW (mask updates at 2, 4, 6, 8), AdamW and data, attached as the trainer does."""
    model = net(seed)
    compressors = Compressors([NeuralWiring(Magnitude, pattern="1x1", target_sparsity=0.6, start_step=2, end_step=8,
                                            update_frequency=2, exclude=())])  # fmt: skip
    compressors.attach(model, RunContext(total_steps=10, num_labels=4, device=torch.device("cpu")))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    data = TensorDataset(torch.randn(40, 16), torch.randint(0, 4, (40,)))
    generator = torch.Generator().manual_seed(seed)
    batches = EpochBatches(lambda epoch: DataLoader(data, batch_size=8, shuffle=True, generator=generator), generator)
    return model, compressors, TrainingState(model, optimizer, scheduler, batches, compressors)


def _train(model, compressors, training, steps) -> None:
    for t in steps:
        x, y = next(training.batches)
        nn.functional.cross_entropy(model(x), y).backward()
        compressors.before_optimizer_step(t)
        training.optimizer.step()
        training.optimizer.zero_grad()
        compressors.after_optimizer_step(t)


def test_a_checkpoint_restores_the_dense_weights_and_the_run_continues_exactly(tmp_path):
    model, compressors, training = _toy()
    _train(model, compressors, training, range(1, 5))  # masks updated at 2 and 4
    Checkpoints(tmp_path, "dnw").save(4, training)
    dense = [d.clone() for d in compressors.members[0].dense]
    assert any(bool((d != w).any()) for d, w in zip(dense, compressors.members[0].weights, strict=True))
    _train(model, compressors, training, range(5, 11))
    final = {k: v.clone() for k, v in model.state_dict().items()}

    model, compressors, fresh = _toy()  # a new process: the same attach, then the checkpoint
    assert Checkpoints(tmp_path, "dnw").resume(fresh) == 4
    method = compressors.members[0]
    assert all(torch.equal(d, saved) for d, saved in zip(method.dense, dense, strict=True))
    assert all(torch.equal(w, d * m) for w, d, m in zip(method.weights, method.dense, method.masks, strict=True))
    _train(model, compressors, fresh, range(5, 11))
    for name, value in model.state_dict().items():
        assert torch.equal(value, final[name]), name
