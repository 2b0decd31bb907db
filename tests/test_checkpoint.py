"""Checkpoints: atomic writes, a round trip of every piece of state, resume after SIGKILL equal to a clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import compose_cfg, tiny_text_overrides
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from compress_sweeps import train
from compress_sweeps.hooks import Compressors
from compress_sweeps.pruners import Pruner
from compress_sweeps.pruners.criteria import SnipMomentum
from compress_sweeps.quantizers import Q8Bert
from compress_sweeps.run.checkpoint import Checkpoints, EpochBatches, TrainingState, save_atomic

# Python-side state in both compressors: snip_momentum scores and an iterative mask schedule (updates at steps 6, 9,
# ..., 42) and Q8BERT activation ranges + shadow weights
COMPRESSORS = ["pruner=snip_momentum", "pruner.target_sparsity=0.5", "quantizer=q8bert", "export=none"]
LOOP = ["logger=none", "threads=1", "trainer.max_steps=60", "trainer.progress=false"]
# a small CNN on digits that learns in 60 steps
RUN = ["task=digits", "model=cnn", "model.channels=[8,16]", "model.hidden=32", *COMPRESSORS, *LOOP, "trainer.lr=3e-3"]
EVERY = 10


def text_run(csvs, model, group_by_length: bool) -> list[str]:
    """The tiny BERT on texts of 4 to 15 tokens: batches of several widths, shuffled or grouped by length."""
    grouping = f"trainer.group_by_length={str(group_by_length).lower()}"
    return [*tiny_text_overrides(csvs, model), *COMPRESSORS, *LOOP, "trainer.lr=1e-3", grouping]


@pytest.mark.runs
@pytest.mark.parametrize("data", ["images", "text", "text_grouped_by_length"])
def test_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tmp_path, request, data):
    run = RUN
    if data != "images":
        csvs, model = request.getfixturevalue("ragged_text_csvs"), request.getfixturevalue("tiny_bert")
        run = text_run(csvs, model, group_by_length=data == "text_grouped_by_length")
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "compress_sweeps", *run, f"trainer.checkpoint_every={EVERY}"]
    command.append(f"hydra.run.dir={run_dir}")
    first = subprocess.Popen(command, cwd=tmp_path, env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = run_dir / "checkpoint" / "last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    _, stderr = first.communicate()
    assert first.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{stderr.decode()[-2000:]}"
    assert checkpoint.is_file() and not (run_dir / "results.json").exists()

    # the reference, in this process while nothing else runs: the same config without checkpoints
    threads = torch.get_num_threads()
    try:
        reference = train.run(compose_cfg([*run, "trainer.checkpoint_every=null"], output_dir=tmp_path / "reference"))
    finally:
        torch.set_num_threads(threads)  # `threads=1` must not slow down the tests after this one
    expected = json.loads((tmp_path / "reference" / "results.json").read_text())

    second = subprocess.run(command, cwd=tmp_path, env=os.environ, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    step = results["resumed_from_step"]
    assert step is not None and step % EVERY == 0 and EVERY <= step < 60, step  # resumed, not restarted
    assert f"resumed from checkpoint at step {step}" in second.stdout
    assert expected["resumed_from_step"] is None and results["job_id"] == expected["job_id"]
    assert results["metrics"]["eval/accuracy"] == pytest.approx(reference, abs=1e-6)
    for key in ("eval/accuracy", "eval/loss", "eval/f1_macro", "pruner/sparsity", "quant/act_range_mean"):
        assert results["metrics"][key] == pytest.approx(expected["metrics"][key], rel=1e-6, abs=1e-9), key
    assert results["compression"]["layers"] == pytest.approx(expected["compression"]["layers"])
    assert not checkpoint.exists()  # a completed run drops its checkpoint


def _toy(seed: int = 0):
    """A two-layer net, an iterative snip_momentum pruner and Q8BERT, attached, with optimizer and data."""
    from compress_sweeps.hooks import RunContext
    from compress_sweeps.trainer import Trainer

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    compressors = Compressors(
        [
            Pruner(criterion=SnipMomentum, pattern="1x1", target_sparsity=0.5, start_step=2, end_step=8,
                   update_frequency=2, exclude=()),
            Q8Bert(start_step=3),
        ]
    )  # fmt: skip
    compressors.attach(model, RunContext(total_steps=10, num_labels=3, device=torch.device("cpu")))
    trainer = Trainer(max_steps=10, batch_size=4, progress=False, device="cpu")
    optimizer = trainer._optimizer(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / 10)
    data = TensorDataset(torch.randn(10, 8), torch.randint(0, 3, (10,)))
    generator = torch.Generator().manual_seed(seed)
    batches = EpochBatches(lambda epoch: DataLoader(data, batch_size=4, shuffle=True, generator=generator), generator)
    return model, compressors, TrainingState(model, optimizer, scheduler, batches, compressors)


def _steps(model, compressors, training, steps) -> list[float]:
    losses = []
    for step in steps:
        x, y = next(training.batches)
        loss = nn.functional.cross_entropy(model(x + 0.1 * torch.randn_like(x)), y)  # global RNG: must be restored
        loss.backward()
        compressors.before_optimizer_step(step)
        training.optimizer.step()
        training.scheduler.step()
        training.optimizer.zero_grad()
        compressors.after_optimizer_step(step)
        losses.append(loss.item())
    return losses


def test_training_state_round_trip_continues_exactly(tmp_path):
    model, compressors, training = _toy()
    _steps(model, compressors, training, range(1, 5))  # masks updated at 2 and 4, quantization on since step 3
    checkpoints = Checkpoints(tmp_path, "abc")
    checkpoints.save(4, training)
    straight = _steps(model, compressors, training, range(5, 11))  # 10 micro-batches per 3 batches: epochs wrap
    final = {k: v.clone() for k, v in model.state_dict().items()}

    model, compressors, fresh = _toy()  # a new process: same attach, then the checkpoint
    resumed = Checkpoints(tmp_path, "abc")
    assert resumed.resume(fresh) == 4 and resumed.resumed_from == 4
    assert _steps(model, compressors, fresh, range(5, 11)) == straight
    for name, value in model.state_dict().items():
        assert torch.equal(value, final[name]), name
    pruner = compressors.members[0]
    assert pruner.groups[0].current == pytest.approx(0.5) and 0.49 < pruner.metrics()["pruner/sparsity"] < 0.51


def test_checkpoint_of_another_config_or_of_a_completed_run_starts_fresh(tmp_path, caplog):
    model, compressors, training = _toy()
    _steps(model, compressors, training, range(1, 3))
    Checkpoints(tmp_path, "config-a").save(2, training)

    other = Checkpoints(tmp_path, "config-b")
    with caplog.at_level("WARNING"):
        assert other.resume(training) == 0
    assert other.resumed_from is None and "config id config-a" in caplog.text

    (tmp_path / "results.json").write_text(json.dumps({"status": "completed", "job_id": "config-a"}))
    with caplog.at_level("WARNING"):
        assert Checkpoints(tmp_path, "config-a").resume(training) == 0
    assert "holds a completed run" in caplog.text
    Checkpoints(tmp_path, "config-a").remove()
    assert not (tmp_path / "checkpoint").exists()


def test_atomic_save_replaces_the_file_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint" / "last.pt"
    save_atomic({"step": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}  # the previous checkpoint is intact
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # and no temp file is left behind


def test_checkpoint_every_is_validated_and_not_part_of_the_job_id():
    from compress_sweeps.run.identity import job_id
    from compress_sweeps.trainer import Trainer

    with pytest.raises(ValueError, match="trainer.checkpoint_every"):
        Trainer(checkpoint_every=0)
    base = compose_cfg(["task=digits", "model=cnn", "logger=none"])
    other = compose_cfg(["task=digits", "model=cnn", "logger=none", "trainer.checkpoint_every=7"])
    assert job_id(base) == job_id(other)  # a run may resume with another cadence; sweep folders keep their names
    kd = ["distiller=logits", "logger=none"]
    assert job_id(compose_cfg(kd)) == job_id(compose_cfg([*kd, "distiller.teachers.main.finetune.checkpoint_every=3"]))
