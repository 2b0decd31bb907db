"""A brand-new pruning method defined here alone, not in src/: by implementing the hooks and `Describes` it gets the
pre-launch check, a correct results.json and the verification gate, with no edit anywhere else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import compose_cfg
from safetensors.torch import load_file, save_file
from torch import nn

from compress_sweeps import train
from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.run.build import build, check
from compress_sweeps.run.verify import verify
from compress_sweeps.spec import CompressionSpec, SparsityPromise

HERE = Path(__file__).resolve().parent


class EveryOtherRow:
    """Zero every other output row of each Linear outside the classifier, from `start_step` on: 50% in channels."""

    def __init__(self, start_step: int = 0) -> None:
        if start_step < 0:
            raise ConfigError("pruner.start_step", start_step, "must be an integer >= 0")
        self.start_step = start_step
        self.layers: dict[str, nn.Linear] = {}

    def attach(self, model: nn.Module, context: RunContext) -> None:
        self.check(context.total_steps)
        self.layers = {
            f"{name}.weight": m
            for name, m in model.named_modules()
            if type(m) is nn.Linear and "classifier" not in name
        }
        self.after_optimizer_step(0)

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        return loss

    def before_optimizer_step(self, step: int) -> None:
        pass

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        if step >= self.start_step:
            for layer in self.layers.values():
                layer.weight[1::2] = 0.0

    def finalize(self, model: nn.Module) -> nn.Module:
        self.after_optimizer_step(self.start_step)
        return model

    def metrics(self) -> dict[str, float]:
        return {}

    def spec(self) -> CompressionSpec:
        promise = SparsityPromise(dict.fromkeys(self.layers, "channel"), target=0.5)
        return CompressionSpec("EveryOtherRow", sparsity=(promise,))

    def check(self, total_steps: int, how: str = "") -> None:
        if self.start_step > total_steps:
            raise ConfigError("pruner.start_step", self.start_step, f"must be <= {total_steps}", "is beyond the run")


TOY = ["task=digits", "model=cnn", "trainer=smoke", "logger=none", "pruner._target_=test_new_method.EveryOtherRow"]


def test_the_precheck_runs_its_checks_before_anything_loads():
    cfg = compose_cfg([*TOY, "+pruner.start_step=10"])  # beyond the smoke run's 3 steps
    with pytest.raises(ConfigError) as caught:
        check(build(cfg), cfg)
    assert (caught.value.key, caught.value.value, caught.value.problem) == (
        "pruner.start_step",
        10,
        "is beyond the run",
    )


@pytest.mark.runs
def test_a_sweep_with_a_bad_point_stops_before_any_job(tmp_path):
    command = [sys.executable, "-m", "compress_sweeps", "-m", *TOY, "+pruner.start_step=1,10"]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert (
        "1 of 2 jobs have invalid settings" in done.stderr and "pruner.start_step=10 is beyond the run" in done.stderr
    )
    assert not list(Path(os.environ["COMPRESS_SWEEPS_OUTPUTS"]).rglob("results.json"))  # nothing ran


def test_its_run_records_the_spec_and_passes_the_gate_and_corrupted_weights_fail_it(tmp_path):
    folder = tmp_path / "run"
    train.run(compose_cfg(TOY, output_dir=folder))
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "completed" and results["verified"]["ok"]
    compression = results["compression"]
    assert compression["spec"] == [
        {
            "method": "EveryOtherRow",
            "sparsity": [{"patterns": {"fc.weight": "channel"}, "target": 0.5}],
            "quantization": None,
            "keeps_zeros": False,
            "batch_keys": [],
            "structure": None,
        }
    ]
    assert compression["layers"] == {"fc.weight": 0.5} and compression["pattern"] == "channel"
    checks = {c["check"] for c in results["verified"]["checks"] if c.get("method") == "EveryOtherRow"}
    assert checks == {"target_sparsity", "pattern channel"}

    weights = load_file(folder / "model.safetensors")
    weights["fc.weight"][1, 0] = 0.5  # revive one weight of a zeroed row: the row is neither zero nor whole
    save_file(weights, str(folder / "model.safetensors"))
    verdict = verify(folder, results)
    failed = {c["check"] for c in verdict["checks"] if not c["ok"]}
    assert not verdict["ok"] and {"pattern channel", "layer fc.weight sparsity"} <= failed
