"""The sweep's W&B dashboard, offline: the report definition built from a sweep folder (its panels, their keys, every
key one the runs logged), a panel over a key no run logged, bad input; the sweep-level run holding the report's
plots; and a job's per-layer figures logged as W&B tables, not summary keys."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from wandb_records import history, run_file, wait_for_exit

from compress_sweeps import cli
from compress_sweeps.loggers.wandb_logger import WandbLogger, flatten, run_config
from compress_sweeps.reporting.dashboard import Dashboard, MissingKey, dashboard_main
from compress_sweeps.reporting.report import report_main
from compress_sweeps.reporting.wandb_runs import SWEEP_JOB_TYPE, logged_sweep, sweep_run_id

LOGGER = {"_target_": "compress_sweeps.loggers.WandbLogger", "project": "dash", "entity": None, "group": None}
LOGGER |= {"name": None, "tags": [], "mode": None, "job_type": "train"}
LAYERS = {"features.0.weight": 0.25, "fc.weight": 0.75}
STRUCTURE = {"layers": {"encoder.0.attention": {"kind": "heads", "kept": 2, "total": 4}}, "blocks": {}}
STRUCTURE["blocks"] = {"encoder": {"kept": 2, "total": 3}}


def make_job(
    sweep: Path,
    sparsity: float,
    pattern: str,
    temperature: float,
    logger: dict | None = None,
    metric: str = "eval/accuracy",
) -> Path:
    """A job folder as a `logger=wandb` run of a KD + pruning sweep leaves it (the files the dashboard reads), scored
    by `metric` (eval/perplexity: a causal LM's sweep)."""
    overrides = {"pruner.target_sparsity": sparsity, "pruner.pattern": pattern, "distiller.temperature": temperature}
    folder = sweep / ",".join(f"{k}={v}" for k, v in overrides.items())
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    config = {"seed": 0, "logger": logger or LOGGER, "paths": {"output_dir": "${hydra:runtime.output_dir}"}}
    config |= {"pruner": {"target_sparsity": sparsity, "pattern": pattern}, "distiller": {"temperature": temperature}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    choices = {"task": "digits", "model": "cnn", "pruner": "snip_momentum", "quantizer": "none", "distiller": "logits"}
    hydra = {"mode": "MULTIRUN", "runtime": {"choices": choices | {"hydra/launcher": "basic"}}}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    compression = {"sparsity": sparsity, "pattern": pattern, "bits": 32, "size_bytes": 4000}
    compression |= {"sparse_size_bytes": int(4000 * (1 - sparsity)), "latency_ratio": 1 - sparsity / 2, "speedup": 1.2}
    compression |= {"layers": LAYERS, "layer_bits": dict.fromkeys(LAYERS, 32), "structure": STRUCTURE}
    results = {"status": "completed", "error": None, "seed": 0, "optimizer_steps": 3, "verified": {"ok": True}}
    results |= {"metrics": {metric: 0.9 - sparsity / 4 + temperature / 100}, "compression": compression}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Four jobs: sparsity 0.5 / 0.8, patterns 1x1 / 4x1, KD temperatures 1 / 4."""
    sweep = tmp_path / "sweeps" / "grid"
    for sparsity, pattern, temperature in [(0.5, "1x1", 1), (0.8, "4x1", 4), (0.5, "4x1", 1), (0.8, "1x1", 4)]:
        make_job(sweep, sparsity, pattern, temperature)
    return sweep


def run_cli(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """`compress-sweeps <argv>` through the console script, in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["compress-sweeps", *argv])
    with pytest.raises(SystemExit) as done:
        cli.cli()
    out, err = capsys.readouterr()
    return done.value.code, out, err


def panels(definition: dict) -> list[tuple[str, dict, list[dict]]]:
    """(section heading, panel, the grid's run sets) of every panel of a report definition."""
    found, heading = [], None
    for block in definition["report"]["spec"]["blocks"]:
        if block["type"] == "heading":
            heading = block["children"][0]["text"]
        if block["type"] == "panel-grid":
            grid = block["metadata"]
            found += [(heading, p, grid["runSets"]) for p in grid["panelBankSectionConfig"]["panels"]]
    return found


def logged(tree: dict, dotted: str) -> bool:
    """Whether `tree` holds a non-null value at `dotted`, whose parts may themselves hold dots (`eval/accuracy`)."""
    if dotted in tree:
        return tree[dotted] is not None
    head, _, rest = dotted.partition(".")
    while rest:
        if isinstance(tree.get(head), dict) and logged(tree[head], rest):
            return True
        more, _, rest = rest.partition(".")
        head = f"{head}.{more}"
    return False


def test_offline_dashboard_definition_has_every_panel_over_logged_keys(sweep, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "dashboard", str(sweep))
    assert (code, err) == (0, "")
    assert f"compress-sweeps dashboard {sweep} --publish" in out and "wandb sync" in out
    definition = json.loads((sweep / "report" / "wandb_report.json").read_text())
    assert (definition["project"], definition["group"]) == ("dash", "grid")
    found = panels(definition)
    by_title = {p["config"].get("chartTitle"): (section, p, runsets) for section, p, runsets in found}
    accuracy = "summary:metrics.eval/accuracy"
    for title, x in [
        ("Accuracy vs latency ratio (measured, vs dense)", "summary:compression.latency_ratio"),
        ("Accuracy vs size (bytes, measured)", "summary:compression.sparse_size_bytes"),
        ("Accuracy vs sparsity, by pattern", "summary:compression.sparsity"),
        ("Accuracy vs KD temperature", "config:distiller.temperature.value"),  # a flat config key, as logged
    ]:
        _, panel, _ = by_title[title]
        assert (panel["viewType"], panel["config"]["xAxis"], panel["config"]["yAxis"]) == ("Scatter Plot", x, accuracy)
    _, _, by_pattern = by_title["Accuracy vs sparsity, by pattern"]
    assert [r["name"] for r in by_pattern] == ["pattern 1x1", "pattern 4x1"]
    assert by_pattern[1]["filters"]["filters"][-1]["key"] == {"section": "summary", "name": "compression.pattern"}
    _, parallel, _ = by_title["Swept settings"]
    columns = [c["accessor"] for c in parallel["config"]["columns"]]
    swept = ["pruner.target_sparsity", "pruner.pattern", "distiller.temperature"]
    assert columns[:3] == [f"config:{k}.value" for k in swept] and accuracy in columns
    # the runs table (run set columns) with the verified figures, the per-layer tables beside it
    [(_, _, [jobs]), *_] = [f for f in found if f[0] == "Runs, per-layer sparsity and kept structure"]
    assert {"summary:verified.ok", accuracy, "summary:compression.latency_ratio"} <= set(jobs["runFeed"]["columnOrder"])
    tables = [p for s, p, _ in found if p["viewType"] == "Weave"]
    named = [json.dumps(p["config"]) for p in tables]
    assert [sum(f'"val": "{t}"' in n for n in named) for t in ("layers", "structure", "report/summary")] == [1, 1, 1]
    # the sweep report's plots, from the sweep-level run
    [(_, media, [report_runs])] = [f for f in found if f[1]["viewType"] == "Media Browser"]
    plots = sorted(f"report/{p.stem}" for p in (sweep / "report").glob("*.png"))
    assert media["config"]["mediaKeys"] == plots and len(plots) == 3
    assert {k: report_runs["filters"]["filters"][-1][k] for k in ("key", "op", "value")} == {
        "key": {"section": "run", "name": "jobType"},
        "op": "=",
        "value": SWEEP_JOB_TYPE,
    }
    # every key a panel or the runs table names is one some run logged (read here from the files themselves)
    jobs_files = [
        (yaml.safe_load((f / ".hydra" / "config.yaml").read_text()), json.loads((f / "results.json").read_text()))
        for f in sweep.iterdir()
        if (f / "results.json").is_file()
    ]
    accessors = {c["accessor"] for _, p, _ in found for c in p["config"].get("columns", [])}
    accessors |= {p["config"][axis] for _, p, _ in found for axis in ("xAxis", "yAxis") if axis in p["config"]}
    accessors |= {c for _, _, runsets in found for r in runsets for c in r["runFeed"]["columnOrder"]}
    for accessor in accessors - {"run:displayName"}:
        section, _, key = accessor.partition(":")
        if section == "config":
            assert any(logged(config, key.removesuffix(".value")) for config, _ in jobs_files), accessor
        else:
            assert section == "summary" and any(logged(results, key) for _, results in jobs_files), accessor


def test_a_causal_lm_sweep_charts_perplexity(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweeps" / "lm"
    for sparsity, pattern in [(0.5, "1x1"), (0.5, "2:4")]:
        make_job(sweep, sparsity, pattern, 1, metric="eval/perplexity")
    code, _, err = run_cli(monkeypatch, capsys, "dashboard", str(sweep))
    assert (code, err) == (0, "")
    found = panels(json.loads((sweep / "report" / "wandb_report.json").read_text()))
    scatters = {p["config"]["chartTitle"]: p["config"]["yAxis"] for _, p, _ in found if p["viewType"] == "Scatter Plot"}
    assert scatters["Perplexity vs sparsity, by pattern"] == "summary:metrics.eval/perplexity"
    assert not any("ccuracy" in title or "accuracy" in y for title, y in scatters.items())


def test_a_panel_over_a_key_no_run_logged_is_an_error(sweep, monkeypatch, capsys):
    dashboard = Dashboard(logged_sweep(sweep), {"media": set(), "table": set()}, "", online=False)
    with pytest.raises(MissingKey, match="config key 'distiller.alpha', which no run of W&B group 'grid' logged"):
        dashboard.scatter("Accuracy vs KD alpha", ("config", "distiller.alpha"))
    with pytest.raises(MissingKey) as caught:
        dashboard.scatter("Accuracy vs int8 latency", ("summary", "compression.int8_export.latency_ratio"))
    assert (caught.value.section, caught.value.key) == ("summary", "compression.int8_export.latency_ratio")
    # a swept key that is no key of the logged config (nor a config group choice): the command stops, naming it
    for steps, overrides in enumerate(sweep.glob("*/.hydra/overrides.yaml")):
        overrides.write_text(yaml.safe_dump([*yaml.safe_load(overrides.read_text()), f"+trainer.lr_warmup={steps}"]))
    code, out, err = run_cli(monkeypatch, capsys, "dashboard", str(sweep))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: panel 'Swept settings' needs the config key 'trainer.lr_warmup'")
    assert not list(Path(os.environ["WANDB_DIR"]).rglob("*.wandb"))  # refused before the sweep-level run logged


def test_online_the_run_sets_name_the_jobs_project(sweep):
    """Online, every run set names the entity and project its runs are in (offline it cannot: the library looks the
    project's id up on the server); the report goes to the same place. Building it needs no network, saving does."""
    report = Dashboard(logged_sweep(sweep), {"media": {"report/plot"}, "table": set()}, "team", online=True).report()
    grids = [block for block in report.blocks if hasattr(block, "runsets")]
    assert len(grids) >= 5 and (report.entity, report.project) == ("team", "dash")
    assert {(r.entity, r.project) for grid in grids for r in grid.runsets} == {("team", "dash")}


def test_bad_input_gets_one_line_and_exit_code_2(sweep, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    unlogged = tmp_path / "unlogged"
    make_job(unlogged, 0.5, "1x1", 1, logger={"_target_": "compress_sweeps.loggers.NullLogger"})
    cases = [
        ([str(tmp_path / "missing")], "is not a sweep folder"),
        ([str(empty)], "is not a sweep folder: no <job>/results.json in it"),
        ([str(unlogged)], f"no job of {unlogged} logged to W&B"),
        ([str(sweep), "--publish"], "--publish needs a W&B API key"),
    ]
    for argv, message in cases:
        assert dashboard_main(argv) == 2
        out, err = capsys.readouterr()
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (argv, err)
    assert not (sweep / "report").exists()  # refused before anything was written or logged


def test_sweep_level_run_holds_the_report_plots(sweep, capsys):
    (sweep / "report").mkdir()  # as a plan leaves it: its candidates, predicted and re-measured
    jobs = [{"name": "dense", "rung": "dense", "measured": {"latency_ratio": 1.0}, "overrides": ["model=cnn"]}]
    jobs += [{"name": "t0.5/fp32", "rung": "finalist", "measured": {"latency_ratio": 0.4}, "overrides": []}]
    (sweep / "report" / "plan.json").write_text(json.dumps({"jobs": jobs}))
    assert report_main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "W&B (offline): 3 plots logged on run 'grid' of group 'grid'" in out and "wandb sync" in out
    wandb_dir = Path(os.environ["WANDB_DIR"])
    path = run_file(wandb_dir)
    assert sweep_run_id(logged_sweep(sweep)) in path.name
    found = wait_for_exit(path)
    [run] = [r.run for r in found if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.run_group, run.display_name, run.job_type) == ("dash", "grid", "grid", SWEEP_JOB_TYPE)
    rows = history(path)  # an image's fields as nested keys: report/<plot>/_type, .../path, ...
    images = {k.removesuffix("/_type"): v for row in rows for k, v in row.items() if k.endswith("/_type")}
    assert images == {f"report/{p.stem}": "image-file" for p in (sweep / "report").glob("*.png")}
    summary = {i.key: json.loads(i.value_json) for r in found if r.WhichOneof("record_type") == "summary"
               for i in r.summary.update}  # fmt: skip
    assert summary["report/summary"]["_type"] == summary["report/plan"]["_type"] == "table-file"
    assert summary["report/plan"]["nrows"] == 2 and summary["report/summary"]["nrows"] == 4  # 4 settings, 1 seed


def test_a_job_logs_per_layer_data_as_wandb_tables(sweep, tmp_path):
    folder = next(p.parent for p in sweep.glob("*/results.json"))
    results = json.loads((folder / "results.json").read_text())
    logger = WandbLogger(project="dash", group="tables", mode="offline")
    logger.start(yaml.safe_load((folder / ".hydra" / "config.yaml").read_text()), tmp_path / "run")
    logger.finish(results, exit_code=0)
    found = wait_for_exit(run_file(Path(os.environ["WANDB_DIR"])))
    summary = {i.key: json.loads(i.value_json) for r in found if r.WhichOneof("record_type") == "summary"
               for i in r.summary.update}  # fmt: skip
    assert summary["layers"]["_type"] == summary["structure"]["_type"] == "table-file"
    assert summary["layers"]["nrows"] == len(LAYERS) and summary["structure"]["nrows"] == 2  # heads + blocks
    per_layer = ("compression.layers.", "compression.layer_bits.", "compression.structure.", "compression.spec")
    assert not [key for key in summary if key.startswith(per_layer)]
    assert summary["metrics.eval/accuracy"] == results["metrics"]["eval/accuracy"] and summary["verified.ok"] is True
    config = {i.key for r in found if r.WhichOneof("record_type") == "run" for i in r.run.config.update}
    assert {"pruner.target_sparsity", "distiller.temperature", "run_dir"} <= config


def test_run_config_names_the_config_group_choices():
    config = run_config({"pruner": {"pattern": "4x1"}}, "/runs/a", {"pruner": "wanda", "hydra/launcher": "basic"})
    assert config == {"pruner.pattern": "4x1", "run_dir": "/runs/a", "choice.pruner": "wanda"}
    assert flatten({"a": {"b": {"c": 1}}}) == {"a.b.c": 1}
