"""`compress-sweeps results <sweep folder>...`: the README's results table from the `results_*` sweeps.

One Markdown table per sweep folder (a task), one row per recipe of conf/recipe/ in a fixed order: accuracy as
mean ± std over seeds, the relative change against the dense row, and the figures the verification gate re-counted
from each run's model.safetensors (sparsity, pattern), plus bits, size and latency. Below each table, the goals of
the results issue are checked against the measured numbers. With `--readme`, the tables replace the text between
the README's `<!-- results:begin -->` and `<!-- results:end -->` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

from compress_sweeps.reporting.report import job_overrides
from compress_sweeps.run.artifacts import RESULTS, write_text_atomic

# recipe -> label, in the order of the table
RECIPES = {
    "dense": "dense baseline",
    "snip80_4x1": "snip_momentum 80% 4x1",
    "snip80_4x1_kd": "snip_momentum 80% 4x1 + KD",
    "nm24": "snip_momentum 2:4",
    "nm24_kd": "snip_momentum 2:4 + KD",
    "unstructured90": "snip_momentum 90% unstructured",
    "unstructured90_kd": "snip_momentum 90% unstructured + KD",
    "q8bert": "Q8BERT int8 QAT",
    "student": "small student, no KD",
    "kd_student": "small student + KD",
    "polino4bit": "Polino 4-bit quantized distillation (student)",
}
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
# goals of the results issue: (recipe, what, limit of the relative drop in %)
DROP_GOALS = [("snip80_4x1_kd", "80% 4x1 with KD", 1.0), ("nm24", "2:4", 0.3), ("nm24_kd", "2:4 with KD", 0.3)]
INT8_GOAL_POINTS = 0.5


def _verified(results: dict, check: str):
    """A value the verification gate measured from the saved model (None when it did not check it)."""
    for entry in (results.get("verified") or {}).get("checks", []):
        if entry.get("check") == check:
            return entry.get("measured")
    return None


def load_runs(sweep_dir: Path) -> dict[str, list[dict]]:
    """recipe -> the results.json of each of its jobs (every status) in `sweep_dir`."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(Path(sweep_dir).glob(f"*/{RESULTS}")):
        recipe = job_overrides(path.parent).get("recipe")
        if recipe is not None:
            runs.setdefault(str(recipe), []).append(json.loads(path.read_text()))
    if not runs:
        raise FileNotFoundError(f"no */{RESULTS} of a +recipe=... job under {sweep_dir}: run a results sweep first")
    return runs


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: dict[str, list[dict]]) -> list[dict]:
    """One dict per recipe (table order) with the means over its completed seeds."""
    rows = []
    dense = [r["metrics"]["eval/accuracy"] for r in runs.get("dense", []) if r["status"] == "completed"]
    dense_mean = statistics.fmean(dense) if dense else None
    for recipe in [*RECIPES, *sorted(set(runs) - set(RECIPES))]:
        jobs = runs.get(recipe, [])
        done = [r for r in jobs if r["status"] == "completed"]
        row = {"recipe": recipe, "label": RECIPES.get(recipe, recipe), "seeds": len(done)}
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
        row["latency_ms"] = statistics.fmean(c["latency_ms"] for c in compression if "latency_ms" in c)
        exports = [c["int8_export"] for c in compression if "latency_ratio" in c.get("int8_export", {})]
        if exports:
            row["int8_accuracy"] = statistics.fmean(e["eval/accuracy"] for e in exports)
            row["int8_drop_points"] = statistics.fmean(e["accuracy_drop"] for e in exports) * 100.0
            row["int8_latency_ratio"] = statistics.fmean(e["latency_ratio"] for e in exports)
        rows.append(row)
    return rows


def to_markdown(rows: list[dict]) -> str:
    head = [
        "| recipe | accuracy (mean ± std) | seeds | rel. change vs dense | verified sparsity | pattern | bits "
        "| size (MB) | latency (ms) | int8 export: accuracy, latency ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines = []
    for row in rows:
        if "accuracy" not in row:
            state = f"failed ({row['failed']} jobs)" if row["failed"] else "not run"
            lines.append(f"| {row['label']} | {state} | 0 |  |  |  |  |  |  |  |")
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
            f"{row['latency_ms']:.3g}",
            int8,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(head + lines) + "\n"


def goal_lines(rows: list[dict]) -> list[str]:
    """The results issue's goals, checked against this table (met / missed by how much)."""
    by_recipe = {row["recipe"]: row for row in rows}
    lines = []
    for recipe, what, limit in DROP_GOALS:
        row = by_recipe.get(recipe, {})
        if "change_pct" not in row:
            continue
        drop = -row["change_pct"]
        verdict = "met" if drop <= limit else f"missed by {drop - limit:.2f} percentage points"
        lines.append(f"- {what}: relative drop {drop:+.2f}% (goal <= {limit}%): {verdict}")
    int8 = by_recipe.get("q8bert", {})
    if "int8_drop_points" in int8:
        drop = int8["int8_drop_points"]
        verdict = "met" if drop <= INT8_GOAL_POINTS else f"missed by {drop - INT8_GOAL_POINTS:.2f} points"
        goal = f"goal <= {INT8_GOAL_POINTS}"
        lines.append(f"- int8 export: accuracy drop vs fp32 of the same run {drop:+.2f} points ({goal}): {verdict}")
    return lines


def describe_runs(runs: dict[str, list[dict]]) -> str:
    """The task, model and steps of the sweep as its jobs recorded them, for the table's caption."""
    jobs = [r for rs in runs.values() for r in rs]
    compute_min = sum(r.get("timing", {}).get("total_s", 0.0) for r in jobs) / 60
    return f"{len(jobs)} jobs, {compute_min:.0f} min of job time"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__}, {platform.system()}"


def render(sweep_dirs: Sequence[Path]) -> str:
    parts = []
    for sweep_dir in sweep_dirs:
        runs = load_runs(sweep_dir)
        rows = summarize(runs)
        parts += [f"**{Path(sweep_dir).name}** ({describe_runs(runs)}, `{sweep_dir}`)", "", to_markdown(rows)]
        goals = goal_lines(rows)
        if goals:
            parts += ["Goals:", "", *goals, ""]
    parts.append(f"Machine: {machine()}.")
    return "\n".join(parts) + "\n"


def replace_between_markers(text: str, body: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"the README has no {BEGIN} ... {END} markers to put the table between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body}{END}{tail}"


def results_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="compress-sweeps results", description=__doc__)
    parser.add_argument("sweep_dirs", type=Path, nargs="+", help="folders of results sweeps (outputs/results/<task>)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument("--readme", type=Path, default=None, help="replace the README's results section")
    args = parser.parse_args(argv)
    for folder in args.sweep_dirs:
        if not folder.is_dir():
            parser.error(f"no such folder: {folder}")
    body = render(args.sweep_dirs)
    print(body)
    if args.out:
        write_text_atomic(args.out, body)
    if args.readme:
        write_text_atomic(args.readme, replace_between_markers(args.readme.read_text(), body))
        print(f"results table written into {args.readme}")
    return 0
