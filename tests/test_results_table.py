"""The results sweeps: every recipe composes on both tasks, and `compress-sweeps results` builds docs/results.md's
tables, their rows read from conf/recipe/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import CONF, compose_cfg
from hydra.utils import instantiate
from torch import nn

from compress_sweeps.hooks import Compressor
from compress_sweeps.reporting import results_table
from compress_sweeps.reporting.results_table import BEGIN, END, recipe_labels, sweep_recipes

ON_DISK = sorted(p.stem for p in (CONF / "recipe").glob("*.yaml"))
BUILDING_BLOCKS = [p.stem for p in (CONF / "recipe").glob("*.yaml") if "Results-table building block" in p.read_text()]
RECIPES = recipe_labels()


def test_the_table_rows_are_the_recipe_files_that_are_not_building_blocks():
    assert sorted(BUILDING_BLOCKS) == ["finetuned_dense", "kd_from_dense"]
    assert sorted(RECIPES) == sorted(set(ON_DISK) - set(BUILDING_BLOCKS))
    assert RECIPES["dense"] == "dense baseline" and RECIPES["snip80_4x1_kd"] == "snip_momentum 80% 4x1 + KD"
    assert len(set(RECIPES.values())) == len(RECIPES)  # every row has a label of its own


@pytest.mark.parametrize("sweep", ["results_text", "results_image"])
def test_results_sweeps_run_every_row_in_the_table_order(sweep):
    assert sweep_recipes(CONF / "sweep" / f"{sweep}.yaml") == list(RECIPES)


def test_rows_follow_the_sweep_order_and_unlisted_recipes_come_last_by_name(tmp_path):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "sweep").mkdir()
    for name, label in [("b", "B row"), ("a", "A row"), ("z", "Z row"), ("y", "Y row")]:
        (tmp_path / "recipe" / f"{name}.yaml").write_text(f'# @package _global_\n# Results-table row "{label}": x\n')
    (tmp_path / "recipe" / "block.yaml").write_text("# Results-table building block: x\nfoo: 1\n")
    (tmp_path / "recipe" / "late.yaml").write_text('foo: 1\n# Results-table row "not in the header"\n')
    sweep = {"hydra": {"sweeper": {"params": {"+recipe": "z,b", "seed": "0,1"}}}}
    (tmp_path / "sweep" / "results_text.yaml").write_text(json.dumps(sweep))
    assert recipe_labels(tmp_path) == {"z": "Z row", "b": "B row", "a": "A row", "y": "Y row"}


@pytest.mark.parametrize("sweep", ["results_text", "results_image"])
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_composes_and_its_compressors_build(sweep, recipe, tmp_path):
    cfg = compose_cfg([f"sweep={sweep}", f"+recipe={recipe}", "logger=none"], output_dir=tmp_path)
    for group in ("pruner", "quantizer", "distiller"):
        assert isinstance(instantiate(cfg[group]), Compressor)
    if recipe.endswith("kd") or recipe in ("slim50_kd_int8", "kd_student", "polino4bit"):
        teacher = cfg.distiller.teachers.main
        assert teacher.model._target_ == cfg.results.teacher._target_  # the dense model of the task
        assert teacher.finetune.max_steps == cfg.trainer.max_steps
    if recipe in ("student", "kd_student", "polino4bit"):
        assert cfg.model == cfg.results.student
    if recipe in ("wanda24", "sparsegpt24", "int8_static", "int8_dynamic"):  # post-training: the KD rows' teacher
        assert cfg.model.model == cfg.results.teacher and cfg.model.finetune == cfg.results.teacher_finetune
        assert cfg.trainer.max_steps == 0
    if recipe.startswith("slim50"):
        assert list(cfg.pruner.units) == list(cfg.results.slim_units)
    if sweep == "results_image":
        assert isinstance(instantiate(cfg.model, num_labels=10), nn.Module)


def fake_job(sweep: Path, recipe: str, seed: int, accuracy: float, **compression) -> None:
    folder = sweep / f"+recipe={recipe},seed={seed}"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- +recipe={recipe}\n- seed={seed}\n- sweep=results_text\n")
    base = {"bits": 32, "size_bytes": 4_000_000, "latency_ratio": 1.0, "speedup": 1.0}
    checks = []
    if "sparsity" in compression:
        checks.append({"check": "sparsity", "expected": compression["sparsity"], "measured": compression["sparsity"]})
    results = {
        "status": "completed",
        "seed": seed,
        "metrics": {"eval/accuracy": accuracy},
        "compression": base | compression,
        "verified": {"ok": True, "checks": checks},
        "timing": {"total_s": 60.0 * (seed + 1)},
        "code": {"version": "0.1.0", "commit": "0123456789abcdef" * 2 + "01234567", "dirty": recipe == "q8bert"},
    }
    (folder / "results.json").write_text(json.dumps(results))


def test_results_table_means_and_drops(tmp_path):
    sweep = tmp_path / "text"
    for seed, (dense, pruned) in enumerate([(0.96, 0.95), (0.98, 0.955)]):
        fake_job(sweep, "dense", seed, dense)
        fake_job(sweep, "snip80_4x1_kd", seed, pruned, sparsity=0.8, pattern="4x1", pattern_holds=True)
    int8 = {"eval/accuracy": 0.965, "accuracy_drop": 0.002, "latency_ratio": 0.45, "latency_ratio_vs_dense": 0.5}
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
    assert "| Q8BERT int8 QAT | 0.9670 ± 0.0000 | 1 | -0.31% |  |  | 8 |" in text
    assert "| 0.9650 (-0.20 pts), 0.50 |" in text  # the int8 model: its accuracy, drop, latency vs dense fp32
    assert "| 1.00 | 0.9650" in text  # the fp32 model's own latency ratio vs dense
    assert "| small student, no KD | not run | 0 |" in text
    assert "| 1.5 | `sweep=results_text +recipe=snip80_4x1_kd` |" in text  # mean wall time of its jobs, its command
    assert "`+recipe=nm24` |" in text  # a failed row still says how to run it
    assert "commits 0123456 (4 jobs), 0123456 with local changes (1 jobs), unknown (1 jobs)" in text
    assert "goal" not in text.lower()  # a results table reports measurements
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| recipe |")]
    assert [line.split(" | ")[0][2:] for line in lines] == list(RECIPES.values())  # every row, in table order


def test_results_command_replaces_only_the_marked_section(tmp_path, capsys):
    sweep = tmp_path / "image"
    fake_job(sweep, "dense", 0, 0.9)
    page = tmp_path / "results.md"
    page.write_text(f"# title\n\nbefore\n{BEGIN}\nold table\n{END}\nafter\n")
    assert results_table.results_main([str(sweep), "--into", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert "old table" not in text and "| dense baseline | 0.9000 ± 0.0000 | 1 |" in text
    page.write_text("no markers\n")
    with pytest.raises(SystemExit) as stopped:
        results_table.results_main([str(sweep), "--into", str(page)])
    assert stopped.value.code == 2 and "markers" in capsys.readouterr().err
    assert page.read_text() == "no markers\n"
    with pytest.raises(ValueError, match="markers"):
        results_table.replace_between_markers("no markers\n", "table\n")


def test_docs_results_page_has_the_markers():
    page = CONF.parent / "docs" / "results.md"
    if not page.parent.is_dir():  # an installed wheel carries conf/ but not docs/
        pytest.skip("no docs/ next to conf/")
    assert results_table.has_markers(page.read_text())
