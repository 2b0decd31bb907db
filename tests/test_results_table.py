"""The results sweeps: every recipe composes on both tasks, and `compress-sweeps results` builds the README table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CONF, compose_cfg
from hydra.utils import instantiate

from compress_sweeps.hooks import Compressor
from compress_sweeps.reporting import results_table
from compress_sweeps.reporting.results_table import BEGIN, END, RECIPES

ON_DISK = sorted(p.stem for p in (CONF / "recipe").glob("*.yaml"))


def test_every_table_recipe_is_a_config_and_every_row_config_is_in_the_table():
    building_blocks = {"kd_from_dense"}
    assert set(RECIPES) == set(ON_DISK) - building_blocks


@pytest.mark.parametrize("sweep", ["results_text", "results_image"])
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_composes_and_its_compressors_build(sweep, recipe, tmp_path):
    cfg = compose_cfg([f"sweep={sweep}", f"+recipe={recipe}", "logger=none"], output_dir=tmp_path)
    for group in ("pruner", "quantizer", "distiller"):
        assert isinstance(instantiate(cfg[group]), Compressor)
    if recipe.endswith("kd") or recipe in ("kd_student", "polino4bit"):
        teacher = cfg.distiller.teachers.main
        assert teacher.model._target_ == cfg.results.teacher._target_  # the dense model of the task
        assert teacher.finetune.max_steps == cfg.trainer.max_steps
    if recipe in ("student", "kd_student", "polino4bit"):
        assert cfg.model == cfg.results.student
    if sweep == "results_image":
        assert instantiate(cfg.model, num_labels=10) is not None


def fake_job(sweep: Path, recipe: str, seed: int, accuracy: float, **compression) -> None:
    folder = sweep / f"+recipe={recipe},seed={seed}"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- +recipe={recipe}\n- seed={seed}\n")
    base = {"bits": 32, "size_bytes": 4_000_000, "latency_ms": 2.0}
    checks = []
    if "sparsity" in compression:
        checks.append({"check": "sparsity", "expected": compression["sparsity"], "measured": compression["sparsity"]})
    results = {
        "status": "completed",
        "seed": seed,
        "metrics": {"eval/accuracy": accuracy},
        "compression": base | compression,
        "verified": {"ok": True, "checks": checks},
        "timing": {"total_s": 60.0},
    }
    (folder / "results.json").write_text(json.dumps(results))


def test_results_table_means_drops_and_goals(tmp_path):
    sweep = tmp_path / "text"
    for seed, (dense, pruned) in enumerate([(0.96, 0.95), (0.98, 0.955)]):
        fake_job(sweep, "dense", seed, dense)
        fake_job(sweep, "snip80_4x1_kd", seed, pruned, sparsity=0.8, pattern="4x1", pattern_holds=True)
    int8 = {"eval/accuracy": 0.965, "accuracy_drop": 0.002, "latency_ratio": 0.5}
    fake_job(sweep, "q8bert", 0, 0.967, bits=8, int8_export=int8)
    failed = sweep / "+recipe=nm24,seed=0"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "overrides.yaml").write_text("- +recipe=nm24\n- seed=0\n")
    (failed / "results.json").write_text(json.dumps({"status": "failed", "error": "ValueError: boom"}))

    rows = {row["recipe"]: row for row in results_table.summarize(results_table.load_runs(sweep))}
    assert rows["dense"]["accuracy"] == pytest.approx(0.97)
    assert rows["dense"]["std"] == pytest.approx(0.014142, abs=1e-5)
    assert rows["snip80_4x1_kd"]["change_pct"] == pytest.approx((0.9525 - 0.97) / 0.97 * 100)
    assert rows["snip80_4x1_kd"]["sparsity"] == pytest.approx(0.8)
    assert rows["nm24"]["seeds"] == 0 and rows["nm24"]["failed"] == 1
    text = results_table.render([sweep])
    assert "| snip_momentum 80% 4x1 + KD | 0.9525 ± 0.0035 | 2 | -1.80% | 0.800 | 4x1 holds |" in text
    assert "| snip_momentum 2:4 | failed (1 jobs) |" in text
    assert "- 80% 4x1 with KD: relative drop +1.80% (goal <= 1.0%): missed by 0.80 percentage points" in text
    assert "- int8 export: accuracy drop vs fp32 of the same run +0.20 points (goal <= 0.5): met" in text


def test_results_command_replaces_only_the_readme_section(tmp_path):
    sweep = tmp_path / "image"
    fake_job(sweep, "dense", 0, 0.9)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{BEGIN}\nold table\n{END}\nafter\n")
    assert results_table.results_main([str(sweep), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert "old table" not in text and "| dense baseline | 0.9000 ± 0.0000 | 1 |" in text
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        results_table.results_main([str(sweep), "--readme", str(readme)])
