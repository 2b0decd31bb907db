"""End-to-end runs on tiny models: the run-output contract, W&B offline history, multirun, failures, typos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose_cfg, tiny_text_overrides
from omegaconf import OmegaConf
from safetensors.torch import load_file
from wandb_records import history, records, run_file, wait_for_exit

from compress_sweeps import train

IMAGE_SMOKE = ["task=digits", "model=cnn", "trainer=smoke", "logger=none"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "compress_sweeps", *args], cwd=cwd, capture_output=True, text=True, env=os.environ
    )


def check_contract(run_dir: Path) -> dict:
    """results.json and model.safetensors as shared/DESIGN.md states them, numbers recounted from the weights."""
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["error"] is None
    assert {"seed", "metrics", "compression", "timing"} <= set(results)
    compression = results["compression"]
    weights = load_file(run_dir / "model.safetensors")
    assert set(compression["layers"]) <= set(weights)
    for name, sparsity in compression["layers"].items():
        assert sparsity == pytest.approx(float((weights[name] == 0).float().mean()))
    assert compression["total_params"] == sum(
        t.numel() for n, t in weights.items() if "running_" not in n and "num_batches" not in n
    )
    assert compression["nonzero_params"] <= compression["total_params"]
    assert compression["size_bytes"] > 0
    # speed as a ratio against the dense model of the same architecture, timed interleaved in the run's process
    latency = compression["latency"]
    assert latency["threads"] >= 1 and latency["machine"]
    assert all(e["dense_ms"] > 0 and e["model_ms"] > 0 for e in latency.values() if isinstance(e, dict))
    assert compression["speedup"] > 0 and compression["latency_ratio"] == pytest.approx(1 / compression["speedup"])
    assert (run_dir / "model_config.yaml").is_file()
    return results


@pytest.mark.runs
def test_image_smoke_run_from_the_command_line(tmp_path):
    done = cli(*IMAGE_SMOKE, "hydra.run.dir=" + str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = check_contract(tmp_path / "run")
    assert results["seed"] == 42
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
    # the saved model config rebuilds the architecture, which loads the saved weights exactly
    from hydra.utils import instantiate

    rebuilt = instantiate(OmegaConf.load(tmp_path / "run" / "model_config.yaml"))
    rebuilt.load_state_dict(load_file(tmp_path / "run" / "model.safetensors"))


@pytest.mark.runs
def test_multirun_gives_one_folder_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = cli("-m", *IMAGE_SMOKE, "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    jobs = sorted(sweep.glob("*/results.json"))
    assert len(jobs) == 2 and len({path.parent for path in jobs}) == 2
    assert sorted(json.loads(path.read_text())["seed"] for path in jobs) == [0, 1]
    assert "sweep " in done.stdout and "2 completed" in done.stdout


@pytest.mark.runs
@pytest.mark.parametrize(
    ("override", "message"),
    [("trainer.max_stpes=3", "max_stpes"), ("pruner=nope", "nope"), ("trainer.lr=-1", "trainer.lr")],
)
def test_bad_input_fails_before_training(tmp_path, override, message):
    done = cli(*IMAGE_SMOKE, override, "hydra.run.dir=" + str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr
    assert "train:" not in done.stderr  # no progress bar: nothing was trained


def test_text_run_with_hf_model_and_wandb_offline(tmp_path, tiny_bert, text_csvs):
    cfg = compose_cfg(
        [
            *tiny_text_overrides(text_csvs, tiny_bert),
            "trainer=smoke",
            "trainer.eval_every=2",
            "trainer.max_steps=4",
            "logger=wandb",
        ],
        output_dir=tmp_path / "run",
    )
    accuracy = train.run(cfg)
    results = check_contract(tmp_path / "run")
    assert accuracy == results["metrics"]["eval/accuracy"]
    # the HF folder loads back with the same weights
    from transformers import AutoModelForSequenceClassification

    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run")
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert torch.equal(reloaded.state_dict()["classifier.weight"], saved["classifier.weight"])
    # W&B: the offline run file holds the eval metric in its history and the final results in its summary
    run_path = run_file(Path(os.environ["WANDB_DIR"]))
    wait_for_exit(run_path)
    rows = history(run_path)
    assert any("eval/accuracy" in row for row in rows)
    assert any("train/loss" in row for row in rows)
    kinds = {r.WhichOneof("record_type"): r for r in records(run_path)}
    keys = {item.key for item in kinds["run"].run.config.update}
    assert "trainer.max_steps" in keys and "model.name_or_path" in keys
    summary = {
        item.key for r in records(run_path) if r.WhichOneof("record_type") == "summary" for item in r.summary.update
    }
    assert "metrics.eval/accuracy" in summary and "compression.sparsity" in summary
    assert not [key for key in summary if key.startswith(("compression.layers.", "compression.layer_bits."))]
    assert "layers" in summary  # per-layer sparsity and bits: one W&B table
    # speed as ratios against the dense model, each absolute time beside its batch, threads and machine
    assert {"compression.speedup", "compression.latency.batch_1.ratio", "compression.latency.machine"} <= summary


@pytest.mark.slow  # a real pretrained MiniLM on BBC News: the longest in-process test (106 s of 788 under load)
def test_pretrained_minilm_on_bbc_news_smoke(tmp_path):
    cfg = compose_cfg(
        [
            "trainer=smoke",
            "task.max_train_examples=16",
            "task.max_eval_examples=16",
            "task.max_length=32",
            "logger=none",
        ],
        output_dir=tmp_path / "run",
    )
    train.run(cfg)
    results = check_contract(tmp_path / "run")
    assert results["compression"]["total_params"] > 22_000_000
    assert len(results["compression"]["layers"]) == 6 * 6  # q, k, v, attn-out, intermediate, output per layer


def test_failed_run_records_the_error_and_reraises(tmp_path, tiny_bert, text_csvs, monkeypatch):
    """A run that fails while training records the error in results.json, re-raises it, and finishes its W&B run
    as failed."""
    from compress_sweeps.trainer import Trainer

    def broken_fit(*args, **kwargs):
        raise FloatingPointError("training loss is nan at optimizer step 2; stopping")

    monkeypatch.setattr(Trainer, "fit", broken_fit)
    overrides = [*tiny_text_overrides(text_csvs, tiny_bert), "trainer=smoke", "logger=wandb"]
    cfg = compose_cfg(overrides, output_dir=tmp_path / "run")
    with pytest.raises(FloatingPointError, match="training loss is"):
        train.run(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed"
    assert results["error"].startswith("FloatingPointError: training loss is") and "Traceback" in results["traceback"]
    exits = [
        r.exit.exit_code
        for r in wait_for_exit(run_file(Path(os.environ["WANDB_DIR"])))
        if r.WhichOneof("record_type") == "exit"
    ]
    assert exits == [1]


def test_same_config_and_seed_give_identical_results(tmp_path):
    outcomes = []
    for name in ("a", "b"):
        cfg = compose_cfg([*IMAGE_SMOKE, "trainer.max_steps=6"], output_dir=tmp_path / name)
        train.run(cfg)
        results = json.loads((tmp_path / name / "results.json").read_text())
        outcomes.append((results["metrics"], load_file(tmp_path / name / "model.safetensors")))
    (metrics_a, weights_a), (metrics_b, weights_b) = outcomes
    assert metrics_a == metrics_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    cfg = compose_cfg([*IMAGE_SMOKE, "trainer.max_steps=6", "seed=1"], output_dir=tmp_path / "c")
    train.run(cfg)
    assert not torch.equal(load_file(tmp_path / "c" / "model.safetensors")["fc.weight"], weights_a["fc.weight"])
