"""`compress-sweeps results <sweep folder>...`: the results tables of docs/results.md from the `results_*` sweeps.

One Markdown table per sweep folder (a task), one row per recipe: accuracy as mean ± std over seeds, the relative
change against the dense row, and the figures the verification gate re-counted from each run's model.safetensors
(sparsity, pattern), plus bits, size and the latency ratio against the dense model timed beside it (the time of the
run's model over the dense model's, batch 32), the wall time of a job and the command that runs the row; each
caption names the commit(s) its jobs ran at (results.json -> code). The rows are the recipes of conf/recipe/ whose
header names a table row (`# Results-table row "<label>": ...`), in the order the results sweep lists them. With
`--into FILE`, the tables replace the text between that file's `<!-- results:begin -->` and `<!-- results:end -->`
markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
from collections.abc import Sequence
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from compress_sweeps.config import config_dir
from compress_sweeps.models import timing
from compress_sweeps.reporting.report import job_overrides
from compress_sweeps.run.artifacts import RESULTS, write_text_atomic

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
ROW = re.compile(r'#\s*Results-table row "(?P<label>[^"]+)"')  # a recipe's header line naming its table row
ORDER_SWEEP = "results_text"  # sweeps/<this>.yaml: its `+recipe` choices give the row order


def _header(path: Path) -> list[str]:
    """The comment lines at the top of a YAML file, before its first key."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def sweep_recipes(sweep_file: Path) -> list[str]:
    """The `+recipe` values of a sweep file's `hydra.sweeper.params`, in its order (parsed as Hydra parses them)."""
    content = yaml.safe_load(Path(sweep_file).read_text()) or {}
    params = ((content.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    if "+recipe" not in params:
        return []
    override = OverridesParser.create().parse_override(f"+recipe={params['+recipe']}")
    return list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(override.value())]


def recipe_labels(conf: Path | None = None) -> dict[str, str]:
    """recipe -> table label of every `conf/recipe/<name>.yaml` whose header reads `# Results-table row "<label>"`,
    in the order of the `+recipe` choices of sweeps/results_text.yaml; recipes it does not list follow by name.
    Recipes without such a line (building blocks such as kd_from_dense) are not rows."""
    conf = config_dir() if conf is None else Path(conf)
    labels = {}
    for path in sorted((conf / "recipe").glob("*.yaml")):
        found = [match["label"] for line in _header(path) if (match := ROW.match(line))]
        if found:
            labels[path.stem] = found[0]
    order = sweep_recipes(conf / "sweep" / f"{ORDER_SWEEP}.yaml")
    ranked = sorted(labels, key=lambda recipe: (order.index(recipe) if recipe in order else len(order), recipe))
    return {recipe: labels[recipe] for recipe in ranked}


def _verified(results: dict, check: str):
    """A value the verification gate measured from the saved model (None when it did not check it)."""
    for entry in (results.get("verified") or {}).get("checks", []):
        if entry.get("check") == check:
            return entry.get("measured")
    return None


def load_runs(sweep_dir: Path) -> dict[str, list[dict]]:
    """recipe -> the results.json of each of its jobs (every status) in `sweep_dir`, each with the job's `sweep=`
    choice added as `sweep_choice` (the command that runs the row)."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(Path(sweep_dir).glob(f"*/{RESULTS}")):
        overrides = job_overrides(path.parent)
        if (recipe := overrides.get("recipe")) is not None:
            results = json.loads(path.read_text()) | {"sweep_choice": overrides.get("sweep")}
            runs.setdefault(str(recipe), []).append(results)
    if not runs:
        raise FileNotFoundError(f"no */{RESULTS} of a +recipe=... job under {sweep_dir}: run a results sweep first")
    return runs


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: dict[str, list[dict]], labels: dict[str, str] | None = None) -> list[dict]:
    """One dict per recipe (the order of `labels`, default `recipe_labels()`; recipes that ran without a label of
    their own follow, by name) with the means over its completed seeds."""
    labels = recipe_labels() if labels is None else labels
    rows = []
    dense = [r["metrics"]["eval/accuracy"] for r in runs.get("dense", []) if r["status"] == "completed"]
    dense_mean = statistics.fmean(dense) if dense else None
    for recipe in [*labels, *sorted(set(runs) - set(labels))]:
        jobs = runs.get(recipe, [])
        done = [r for r in jobs if r["status"] == "completed"]
        row = {"recipe": recipe, "label": labels.get(recipe, recipe), "seeds": len(done)}
        row["command"] = " ".join(
            [*sorted({f"sweep={r['sweep_choice']}" for r in jobs if r.get("sweep_choice")}), f"+recipe={recipe}"]
        )
        row["failed"] = len(jobs) - len(done)
        if not done:
            rows.append(row | {"errors": [r.get("error") for r in jobs]})
            continue
        accuracy, std = _mean_std([r["metrics"]["eval/accuracy"] for r in done])
        row |= {"accuracy": accuracy, "std": std}
        if dense_mean is not None:
            row["change_pct"] = (accuracy - dense_mean) / dense_mean * 100.0
        compression = [r["compression"] for r in done]
        sparsity = [_verified(r, "sparsity") for r in done]
        if all(s is not None for s in sparsity) and any(c.get("pattern") for c in compression):
            row["sparsity"] = statistics.fmean(sparsity)
            row["pattern"] = compression[0].get("pattern")
            row["pattern_holds"] = all(c.get("pattern_holds", True) for c in compression)
        row["bits"] = statistics.fmean(c["bits"] for c in compression)
        sizes = [c.get("sparse_size_bytes") or c["size_bytes"] for c in compression]
        row["size_mb"] = statistics.fmean(sizes) / 2**20
        ratios = [c["latency_ratio"] for c in compression if "latency_ratio" in c]  # vs dense, same process
        if ratios:
            row["latency_ratio"] = statistics.fmean(ratios)
        row["wall_min"] = statistics.fmean((r.get("timing") or {}).get("total_s", 0.0) for r in done) / 60
        exports = [c["int8_export"] for c in compression if "latency_ratio" in c.get("int8_export", {})]
        if exports:
            row["int8_accuracy"] = statistics.fmean(e["eval/accuracy"] for e in exports)
            row["int8_drop_points"] = statistics.fmean(e["accuracy_drop"] for e in exports) * 100.0
            # against the dense fp32 model where the export timed it, else against the run's own fp32 model
            row["int8_latency_ratio"] = statistics.fmean(
                e.get("latency_ratio_vs_dense", e["latency_ratio"]) for e in exports
            )
        rows.append(row)
    return rows


def to_markdown(rows: list[dict]) -> str:
    head = [
        "| recipe | accuracy (mean ± std) | seeds | rel. change vs dense | verified sparsity | pattern | bits "
        "| size (MB) | latency vs dense | int8 export: accuracy, latency vs dense fp32 | wall (min) | run it |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines = []
    for row in rows:
        if "accuracy" not in row:
            state = f"failed ({row['failed']} jobs)" if row["failed"] else "not run"
            lines.append(f"| {row['label']} | {state} | 0 |  |  |  |  |  |  |  |  | `{row['command']}` |")
            continue
        change = f"{row['change_pct']:+.2f}%" if "change_pct" in row else ""
        sparsity = f"{row['sparsity']:.3f}" if "sparsity" in row else ""
        pattern = f"{row['pattern']} {'holds' if row['pattern_holds'] else 'BROKEN'}" if "pattern" in row else ""
        int8 = ""
        if "int8_accuracy" in row:
            int8 = f"{row['int8_accuracy']:.4f} ({-row['int8_drop_points']:+.2f} pts), {row['int8_latency_ratio']:.2f}"
        cells = [
            row["label"],
            f"{row['accuracy']:.4f} ± {row['std']:.4f}",
            str(row["seeds"]) + (f" (+{row['failed']} failed)" if row["failed"] else ""),
            change,
            sparsity,
            pattern,
            f"{row['bits']:.3g}",
            f"{row['size_mb']:.3g}",
            f"{row['latency_ratio']:.2f}" if "latency_ratio" in row else "",
            int8,
            f"{row['wall_min']:.1f}",
            f"`{row['command']}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(head + lines) + "\n"


def describe_runs(runs: dict[str, list[dict]]) -> str:
    """The number of jobs of the sweep, their summed run time and the code they ran, for the table's caption."""
    jobs = [r for rs in runs.values() for r in rs]
    compute_min = sum(r.get("timing", {}).get("total_s", 0.0) for r in jobs) / 60
    return f"{len(jobs)} jobs, {compute_min:.0f} min of job time, {describe_code(jobs)}"


def describe_code(jobs: list[dict]) -> str:
    """The commits the jobs ran at (results.json -> code), e.g. `commit 26b8137` or `commits 26b8137 (30 jobs),
    9f0e1d2 with local changes (6 jobs)`; jobs from before the code was recorded are counted as unknown."""
    counts: dict[str, int] = {}
    for job in jobs:
        code = job.get("code") or {}
        name = code["commit"][:7] if code.get("commit") else "unknown"
        name += " with local changes" if code.get("dirty") else ""
        counts[name] = counts.get(name, 0) + 1
    if len(counts) == 1:
        return f"commit {next(iter(counts))}"
    return "commits " + ", ".join(f"{name} ({count} jobs)" for name, count in sorted(counts.items()))


def machine() -> str:
    import torch

    return f"{timing.machine()}, {os.cpu_count()} cores visible, torch {torch.__version__}, {platform.system()}"


def render(sweep_dirs: Sequence[Path]) -> str:
    """The tables of every sweep folder, each with its caption, and the machine they were rendered on."""
    labels = recipe_labels()
    parts = []
    for sweep_dir in sweep_dirs:
        runs = load_runs(sweep_dir)
        caption = f"**{Path(sweep_dir).name}** ({describe_runs(runs)}, `{sweep_dir}`); a row's `run it` runs its seeds "
        caption += "with `python -m compress_sweeps -m <run it>` (add the launcher settings of `make results`)"
        parts += [caption, "", to_markdown(summarize(runs, labels))]
    parts.append(f"Machine: {machine()}.")
    return "\n".join(parts) + "\n"


def has_markers(text: str) -> bool:
    return BEGIN in text and END in text


def replace_between_markers(text: str, body: str) -> str:
    """`text` with everything between the results markers replaced by `body`."""
    if not has_markers(text):
        raise ValueError(f"no {BEGIN} ... {END} markers to put the tables between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body}{END}{tail}"


def results_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="compress-sweeps results", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dirs", type=Path, nargs="+", help="folders of results sweeps (outputs/results/<task>)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument(
        "--into", type=Path, default=None, help="replace the text between the results markers of this Markdown file"
    )
    args = parser.parse_args(argv)
    for folder in args.sweep_dirs:
        if not folder.is_dir():
            parser.error(f"no such folder: {folder}")
    if args.into and not (args.into.is_file() and has_markers(args.into.read_text())):
        parser.error(f"{args.into} has no {BEGIN} ... {END} markers to put the tables between")
    body = render(args.sweep_dirs)
    print(body)
    if args.out:
        write_text_atomic(args.out, body)
    if args.into:
        write_text_atomic(args.into, replace_between_markers(args.into.read_text(), body))
        print(f"results tables written into {args.into}")
    return 0
