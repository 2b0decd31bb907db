"""Pruning end to end on a tiny BERT: results.json and model.safetensors agree, the pattern holds when re-counted
with plain torch, W&B gets the per-step sparsity, pattern_lock keeps a pruned run's zeros, groups compose."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from helpers import compose_cfg, tiny_text_overrides
from safetensors.torch import load_file
from wandb_records import history, run_file

from compress_sweeps import train


def text_run(tmp_path: Path, name: str, text_csvs, model: Path, *overrides: str) -> dict:
    cfg = compose_cfg(
        [
            *tiny_text_overrides(text_csvs, model),
            "trainer=smoke",
            "trainer.max_steps=4",
            "logger=none",
            *overrides,
        ],
        output_dir=tmp_path / name,
    )
    train.run(cfg)
    return json.loads((tmp_path / name / "results.json").read_text())


def logged_rows(key: str, wait_s: float = 10.0) -> list[dict]:
    """History rows of the offline W&B run that hold `key` (its writer may still be flushing on a busy machine)."""
    deadline = time.monotonic() + wait_s
    while True:
        rows = [row for row in history(run_file(Path(os.environ["WANDB_DIR"]))) if key in row]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def recount(run_dir: Path, layers: list[str]) -> tuple[float, dict[str, torch.Tensor]]:
    """Sparsity over `layers` straight from model.safetensors."""
    weights = load_file(run_dir / "model.safetensors")
    zeros = sum(int((weights[n] == 0).sum()) for n in layers)
    return zeros / sum(weights[n].numel() for n in layers), weights


def test_snip_momentum_4x1_run_is_recounted_from_the_saved_weights(tmp_path, tiny_bert, text_csvs):
    overrides = ["pruner=snip_momentum", "pruner.target_sparsity=0.5", "pruner.pattern=4x1", "logger=wandb"]
    results = text_run(tmp_path, "run", text_csvs, tiny_bert, *overrides)
    compression = results["compression"]
    assert results["status"] == "completed" and compression["pattern"] == "4x1" and compression["pattern_holds"]
    assert len(compression["layers"]) == 2 * 6 and not any("classifier" in n for n in compression["layers"])
    sparsity, weights = recount(tmp_path / "run", list(compression["layers"]))
    assert sparsity == pytest.approx(compression["sparsity"]) and sparsity == pytest.approx(0.5, abs=0.005)
    for name in compression["layers"]:  # 4x1: zeros fill whole runs of 4 output rows of one input column
        zeros = (weights[name] == 0).reshape(-1, 4, weights[name].shape[1]).sum(1)
        assert set(zeros.unique().tolist()) <= {0, 4}, name
    assert float((weights["classifier.weight"] == 0).float().mean()) == 0.0
    rows = logged_rows("pruner/sparsity")
    assert rows and rows[-1]["pruner/target_sparsity"] == pytest.approx(0.5)
    assert rows[0]["pruner/sparsity"] < rows[-1]["pruner/sparsity"] == pytest.approx(0.5, abs=0.005)

    # Prune-Once-for-All, downstream half: train the pruned model on with its zeros locked
    locked = text_run(tmp_path, "locked", text_csvs, tmp_path / "run", "pruner=pattern_lock")
    before, after = (
        load_file(tmp_path / "run" / "model.safetensors"),
        load_file(tmp_path / "locked" / "model.safetensors"),
    )
    for name in compression["layers"]:
        assert bool((after[name][before[name] == 0] == 0).all()), name
        assert not torch.equal(after[name], before[name])  # it did train
    assert locked["metrics"]["pruner/sparsity"] >= compression["sparsity"]


@pytest.mark.slow
def test_two_four_run_and_groups_from_an_experiment(tmp_path, tiny_bert, text_csvs):
    results = text_run(tmp_path, "nm", text_csvs, tiny_bert, "pruner=snip_momentum", "pruner.pattern=2:4")
    compression = results["compression"]
    assert compression["pattern"] == "2:4" and compression["pattern_holds"] and compression["sparsity"] == 0.5
    _, weights = recount(tmp_path / "nm", list(compression["layers"]))
    for name in compression["layers"]:
        assert int((weights[name] != 0).reshape(-1, 4).sum(-1).max()) <= 2, name

    results = text_run(tmp_path, "groups", text_csvs, tiny_bert, "experiment=prune_heads_and_ffn")
    compression = results["compression"]
    assert compression["pattern_holds"] and compression["pattern_violations"] == []
    assert compression["pattern"]["bert.encoder.layer.0.attention.self.query.weight"] == "16x32"
    assert compression["pattern"]["bert.encoder.layer.0.intermediate.dense.weight"] == "4x1"
    assert results["metrics"]["pruner/group0/sparsity"] == 0.5
    assert results["metrics"]["pruner/group1/sparsity"] == pytest.approx(0.8, abs=0.005)


def test_incompatible_pattern_fails_with_the_layer_named(tmp_path, tiny_bert, text_csvs):
    with pytest.raises(ValueError, match="layer 'bert.encoder.layer.0.attention.self.query'"):
        text_run(tmp_path, "bad", text_csvs, tiny_bert, "pruner=magnitude", "pruner.pattern=1:3")
    results = json.loads((tmp_path / "bad" / "results.json").read_text())
    assert results["status"] == "failed" and "pruner.skip_incompatible" in results["error"]
