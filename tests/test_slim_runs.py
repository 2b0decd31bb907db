"""End to end: a pruner=slim run leaves a smaller model that the project's loader rebuilds and verify re-counts."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from compress_sweeps.errors import ConfigError
from compress_sweeps.models import from_run
from compress_sweeps.models.structure import STRUCTURE


def slim_run(tmp_path, tiny_bert, text_csvs, units: str, *extra: str):
    from helpers import compose_cfg, tiny_text_overrides

    from compress_sweeps import train

    data = tiny_text_overrides(text_csvs, tiny_bert) if units != "[channels]" else ["task=digits", "model=cnn"]
    overrides = ["pruner=slim", f"pruner.units={units}", "pruner.target=0.5", *extra]
    folder = tmp_path / "run"
    cfg = compose_cfg([*data, "trainer=smoke", "trainer.max_steps=4", "logger=none", *overrides], output_dir=folder)
    train.run(cfg)
    return folder, json.loads((folder / "results.json").read_text())


@pytest.mark.parametrize("units", ["[heads,ffn,blocks]", "[channels]"])
def test_slim_run_saves_a_smaller_model_that_reloads_and_verifies(tmp_path, tiny_bert, text_csvs, units):
    from safetensors.torch import load_file

    folder, results = slim_run(tmp_path, tiny_bert, text_csvs, units)
    assert results["status"] == "completed" and results["verified"]["ok"]
    checked = {c["check"] for c in results["verified"]["checks"]}
    assert {"saved model rebuilds", "prunable flops removed", "units cut out", "flops prunable_after"} <= checked
    compression = results["compression"]
    structure, [spec] = compression["structure"], compression["spec"]
    promise = spec["structure"]
    assert promise["target"] - promise["tolerance"] - 1e-9 <= structure["removed"]["flops"] <= 0.5 + 1e-9
    assert structure["params"]["model_after"] < structure["params"]["model_before"]
    assert (folder / STRUCTURE).is_file()
    saved = load_file(folder / "model.safetensors")
    assert (
        compression["total_params"]
        == structure["params"]["model_after"]
        == sum(
            t.numel()
            for n, t in saved.items()
            if not n.endswith(("running_mean", "running_var", "num_batches_tracked"))
        )
    )
    latency = compression["latency"]  # the finalized model against the dense one, timed interleaved
    assert {"batch_1", "threads", "machine"} <= set(latency)
    for entry in (v for v in latency.values() if isinstance(v, dict)):
        assert entry["ratio"] == pytest.approx(entry["model_ms"] / entry["dense_ms"])
    assert compression["speedup"] == pytest.approx(1 / compression["latency_ratio"])
    reloaded = from_run(str(folder), num_labels=3 if units != "[channels]" else 10).eval()
    assert sum(p.numel() for p in reloaded.parameters()) == compression["total_params"]
    # heads and widths differ per layer: the folder's config.json cannot say so, and results.json tells
    assert compression.get("hf_from_pretrained") is (False if units != "[channels]" else None)


def test_verify_catches_a_tampered_slim_model(tmp_path, tiny_bert, text_csvs):
    import shutil

    from safetensors.torch import load_file, save_file

    from compress_sweeps.run.verify import failures, verify

    folder, results = slim_run(tmp_path, tiny_bert, text_csvs, "[heads,ffn]")
    assert verify(folder, results)["ok"]
    # the structure record claims the dense shapes back: the saved weights no longer load into it
    record = json.loads((folder / STRUCTURE).read_text())
    wider = copy.deepcopy(record)
    for spec in wider["modules"].values():
        if spec["type"] == "Linear" and spec["weight"][0] < 64 and spec["weight"][1] == 32:
            spec["weight"][0] += 1
    (folder / STRUCTURE).write_text(json.dumps(wider))
    assert "saved model rebuilds" in failures(verify(folder, results))
    (folder / STRUCTURE).write_text(json.dumps(record))
    # the weights and the record both grown back to a dense FFN (zeros in the new rows): consistent files, but the
    # prunable part is no longer smaller by the promised fraction
    weights = load_file(folder / "model.safetensors")
    for name in [n for n in weights if n.endswith("intermediate.dense.weight")]:
        layer = name.removesuffix(".weight")
        out = name.replace("intermediate.dense", "output.dense")
        width = weights[name].shape[0]
        weights[name] = torch.cat([weights[name], torch.zeros(64 - width, 32)])
        weights[f"{layer}.bias"] = torch.cat([weights[f"{layer}.bias"], torch.zeros(64 - width)])
        weights[out] = torch.cat([weights[out], torch.zeros(32, 64 - width)], dim=1)
        record["modules"][layer]["weight"] = [64, 32]
        record["modules"][layer.replace("intermediate", "output")]["weight"] = [32, 64]
    shutil.copy(folder / "model.safetensors", tmp_path / "kept.safetensors")
    save_file(weights, str(folder / "model.safetensors"))
    (folder / STRUCTURE).write_text(json.dumps(record))
    found = failures(verify(folder, results))
    assert "prunable flops removed" in found and "params model_after" in found


@pytest.mark.runs
def test_a_bad_slim_setting_stops_the_run_before_anything_loads(tmp_path):
    """The pre-launch pass: a bad value or a schedule beyond the run is one line naming the key (exit code 2 from
    the command line), before any data, model or run folder."""
    import os
    import subprocess
    import sys

    from helpers import compose_cfg

    from compress_sweeps.run.build import build, check

    args = ["task=digits", "model=cnn", "trainer=smoke", "logger=none", "pruner=slim", "pruner.units=[channels]"]
    cfg = compose_cfg([*args, "pruner.end_step=50"], output_dir=tmp_path / "run")
    with pytest.raises(
        ConfigError, match=re.escape("pruner.end_step=50 is beyond the run: must resolve to a step <= 3")
    ):
        check(build(cfg), cfg)
    done = subprocess.run(
        [sys.executable, "-m", "compress_sweeps", *args, "pruner.target=1.5", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert done.returncode == 2, done.stderr
    assert "pruner.target=1.5 is out of range: must be a number > 0 and < 1" in done.stderr
    assert not (tmp_path / "run").exists()
