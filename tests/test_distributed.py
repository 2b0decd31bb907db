"""One run on two processes (torchrun, gloo, CPU): identical state on both ranks, one set of files, one W&B run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn

from compress_sweeps import distributed
from compress_sweeps.distributed import ShardSampler

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_shards_of_one_epoch_are_disjoint_and_cover_the_data():
    samplers = [ShardSampler(10, torch.Generator().manual_seed(3), rank, 3) for rank in range(3)]
    shards = [list(sampler) for sampler in samplers]
    assert [len(s) for s in shards] == [len(sampler) for sampler in samplers] == [4, 3, 3]
    assert sorted(i for s in shards for i in s) == list(range(10))


def test_single_process_helpers_are_the_plain_behaviour():
    assert not distributed.active() and distributed.is_main()
    model = nn.Linear(2, 2)
    assert distributed.wrap(model, torch.device("cpu")) is model
    assert distributed.on_rank_zero(lambda x: x + 1, 1) == 2
    low, high = torch.tensor(-1.0), torch.tensor(2.0)
    assert distributed.global_min_max(low, high) == (low, high)
    assert distributed.check_state(model, None) is None


def _check_two_ranks(rank: int, store: str, out: str) -> None:
    """One spawned rank: ranges over both ranks, and a state check that finds the tensor rank 1 changed."""
    torch.set_num_threads(1)
    os.environ |= {"RANK": str(rank), "WORLD_SIZE": "2"}
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        low, high = distributed.global_min_max(torch.tensor(-1.0 - rank), torch.tensor(1.0 + 2 * rank))
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        model.register_buffer("weight_mask", torch.ones(2, 3), persistent=False)

        scores = {"a": torch.ones(2), "b": torch.zeros(2)}

        class Members:  # stands in for the run's compressors: the tensors of their state_dict() are checked too
            def state_dict(self):
                return {"0.Holder": {"scores": scores}}

        same = distributed.check_state(model, Members())
        if rank == 1:
            model.weight_mask[0, 0] = 0.0
            scores["b"] += 1e-6
        differs = distributed.check_state(model, Members())
        Path(out, f"{rank}.json").write_text(json.dumps([float(low), float(high), same, differs]))
    finally:
        dist.destroy_process_group()


def test_state_check_names_what_differs_between_ranks(tmp_path):
    mp.spawn(_check_two_ranks, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    for rank in range(2):
        low, high, same, differs = json.loads((tmp_path / f"{rank}.json").read_text())
        assert (low, high) == (-2.0, 3.0)  # the min and max over both ranks, on both ranks
        assert same == {"world_size": 2, "backend": "gloo", "state_identical": True, "tensors_checked": 5}
        assert differs["state_identical"] is False
        assert differs["differing"] == ["0.Holder[scores][b]", "model.weight_mask"]


@pytest.mark.runs
def test_torchrun_two_processes_prune_and_quantize_one_run(tmp_path):
    """snip_momentum + q8bert on 2 gloo ranks: one folder (no hydra.run.dir given), one results.json, one W&B run."""
    env = os.environ | {
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
        "COMPRESS_SWEEPS_OUTPUTS": str(tmp_path / "outputs"),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    overrides = ["task=digits", "model=cnn", "trainer=smoke", "trainer.max_steps=20", "trainer.progress=false"]
    overrides += ["pruner=snip_momentum", "quantizer=q8bert", "logger=wandb"]
    done = subprocess.run(
        [*command, "-m", "compress_sweeps", *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 1, runs  # both ranks resolved ${cs_now:...} to rank 0's time
    assert len(list(tmp_path.rglob("results.json"))) == 1
    results = json.loads((runs[0] / "results.json").read_text())
    assert results["status"] == "completed", results["error"]
    assert results["distributed"]["world_size"] == 2 and results["distributed"]["backend"] == "gloo"
    assert results["distributed"]["state_identical"] is True
    assert results["verified"]["ok"]
    weights = load_file(runs[0] / "model.safetensors")
    pruned = [weights[name] for name in results["compression"]["layers"]]
    sparsity = sum(int((w == 0).sum()) for w in pruned) / sum(w.numel() for w in pruned)
    assert sparsity == pytest.approx(0.9, abs=0.005) and sparsity == pytest.approx(results["compression"]["sparsity"])
    assert done.stdout.count("eval/accuracy = ") == 1  # rank 0 reports; rank 1 stays quiet
    offline = list(Path(os.environ["WANDB_DIR"]).rglob("offline-run-*"))
    assert len(offline) == 1, offline  # rank 0 alone logs to W&B
