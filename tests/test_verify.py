"""The verification gate re-counts runs from their saved files and fails runs whose files disagree."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import compose_cfg
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from compress_sweeps import train
from compress_sweeps.weights.grid import max_levels
from compress_sweeps.weights.patterns import parse_pattern, pattern_holds

SMOKE = ["task=digits", "model=cnn", "trainer=smoke", "logger=none", "trainer.progress=false"]


def test_unit_counters():
    weight = torch.ones(4, 8)
    weight[:2, :4] = 0  # one of the four 2x4 blocks
    assert parse_pattern("2x4").zero_units(weight) == (1, 4) and parse_pattern("channel").zero_units(weight) == (0, 4)
    assert pattern_holds(torch.tensor([[1.0, 0, 0, 2, 0, 3, 0, 0]]), "2:4")
    assert not pattern_holds(torch.tensor([[1.0, 1, 1, 0, 0, 0, 0, 0]]), "2:4")
    levels = torch.tensor([0.0, 0.5, 0.5, -0.5, 1.0, 0.0, 2.0, 2.0])
    assert max_levels(levels, None) == 4 and max_levels(levels, 4) == 2


def run(tmp_path, *overrides: str):
    folder = tmp_path / "run"
    cfg = compose_cfg([*SMOKE, *overrides], output_dir=folder)
    train.run(cfg)
    (folder / ".hydra").mkdir()  # as the command line leaves it, for `compress-sweeps verify`
    (folder / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return folder, json.loads((folder / "results.json").read_text())


def verify_cli(folder, *flags: str):
    return subprocess.run(
        [sys.executable, "-m", "compress_sweeps", "verify", str(folder), *flags], capture_output=True, text=True
    )


@pytest.mark.runs
def test_pruned_run_verifies_and_a_revived_weight_fails_it(tmp_path):
    folder, results = run(tmp_path, "pruner=magnitude", "pruner.target_sparsity=0.5", "pruner.pattern=4x1")
    assert results["status"] == "completed" and results["verified"]["ok"]
    assert {c["check"] for c in results["verified"]["checks"]} >= {"target_sparsity", "pattern 4x1"}
    assert verify_cli(folder).returncode == 0
    # revive some pruned weights, as a buggy export would
    weights = load_file(folder / "model.safetensors")
    fc = weights["fc.weight"]
    fc[fc == 0] = 0.01
    save_file(weights, str(folder / "model.safetensors"))
    before = (folder / "results.json").read_text()
    done = verify_cli(folder)
    assert done.returncode == 1 and "FAIL layer fc.weight sparsity" in done.stdout
    assert (folder / "results.json").read_text() == before  # read-only unless asked to record
    (folder / "results.json").chmod(0o444)  # a read-only copy verifies too
    assert verify_cli(folder).returncode == 1
    (folder / "results.json").chmod(0o644)
    assert verify_cli(folder, "--record").returncode == 1
    after = json.loads((folder / "results.json").read_text())
    assert after["status"] == "failed" and after["error"].startswith("verification failed: layer fc.weight")


@pytest.mark.runs
def test_quantized_run_verifies_and_extra_levels_fail_it(tmp_path):
    folder, results = run(tmp_path, "quantizer=q8bert", "quantizer.bits=4")
    assert results["verified"]["ok"], results["verified"]
    weights = load_file(folder / "model.safetensors")
    weights["fc.weight"] += 1e-3 * torch.randn_like(weights["fc.weight"])  # off the 4-bit grid
    save_file(weights, str(folder / "model.safetensors"))
    done = verify_cli(folder)
    assert done.returncode == 1 and "FAIL 2 weights at 4 bits" in done.stdout and "fc.weight" in done.stdout


@pytest.mark.runs
def test_one_weight_moved_off_the_8_bit_grid_fails_verification(tmp_path):
    folder, results = run(tmp_path, "quantizer=q8bert", "export=none")
    assert results["verified"]["ok"], results["verified"]
    weights = load_file(folder / "model.safetensors")
    fc = weights["fc.weight"]
    step = float(fc.abs().max()) / 127
    fc.view(-1)[0] += 0.4 * step  # one weight between two codes: no new extreme, few enough levels
    save_file(weights, str(folder / "model.safetensors"))
    done = verify_cli(folder)
    assert done.returncode == 1 and "fc.weight" in done.stdout


@pytest.mark.runs
def test_verify_names_a_folder_that_is_not_a_run(tmp_path):
    done = verify_cli(tmp_path)
    assert done.returncode == 2 and "not a readable finished run folder" in done.stderr
    (tmp_path / "results.json").write_text("{not json")
    assert verify_cli(tmp_path).returncode == 2


@pytest.mark.parametrize("pattern", ["2:4"])
def test_nm_run_verifies(tmp_path, pattern):
    _, results = run(tmp_path, "pruner=magnitude", f"pruner.pattern={pattern}", "pruner.skip_incompatible=true")
    checks = {c["check"]: c for c in results["verified"]["checks"]}
    assert checks[f"pattern {pattern}"]["ok"] and checks["target_sparsity"]["expected"] == 0.5


@pytest.mark.runs
def test_verify_reads_the_spec_not_the_config(tmp_path):
    """The gate needs results.json and the weights alone: no .hydra/ config, no method-specific keys."""
    folder, results = run(tmp_path, "pruner=magnitude", "pruner.target_sparsity=0.5", "pruner.pattern=4x1")
    (folder / ".hydra" / "config.yaml").unlink()
    assert verify_cli(folder).returncode == 0
    [spec] = results["compression"]["spec"]
    assert spec["sparsity"][0]["target"] == 0.5 and set(spec["sparsity"][0]["patterns"].values()) == {"4x1"}


def test_pruned_and_quantized_run_counts_whole_zero_blocks(tmp_path):
    # 4-bit rounding zeroes stray weights inside kept blocks: the gate counts whole zero blocks against the target
    _, results = run(
        tmp_path,
        "pruner=magnitude",
        "pruner.target_sparsity=0.5",
        "pruner.pattern=4x1",
        "quantizer=q8bert",
        "quantizer.bits=4",
        "quantizer.include=[fc]",
    )
    checks = {c["check"]: c for c in results["verified"]["checks"]}
    assert results["status"] == "completed", results["verified"]
    assert checks["pattern 4x1"]["ok"] and checks["pattern 4x1"]["measured"] >= 0.495
