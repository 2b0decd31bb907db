"""The planner's Pareto front against a hand-made grid of the same task: both re-timed on the same axes.

Every finished job of the plan sweep(s) and of the grid sweep(s) is re-timed in one process, interleaved with the
dense model (the plan's dense run, fp32), on the plan's inputs and threads (`report/plan.json`), `--group` jobs per
interleaved set: all 30 jobs of two MiniLM plans and a grid in one set put a job up to ~30 s away from the dense
model's timing within a repeat, and that set's later jobs read 8-15% slower than the same files timed in small
sets. A job's deliverable is its int8 ONNX file when it exported one, else its fp32 weights. Accuracy is the
delivered model's (the int8 model's for an export). Prints every point, the jobs and job time each sweep spent, and
the best accuracy each reaches within the plan's latency budget; plots both fronts with the budget line.

    PYTHONPATH=src python bench/plan_vs_grid.py --plan <plan sweep> [--plan <another>] --grid <sweep> [--grid ...] \
        --out docs/img/plan_vs_grid.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from compress_sweeps.export.onnx import OnnxModel  # noqa: E402
from compress_sweeps.models import from_run, tokenizer_for  # noqa: E402
from compress_sweeps.models.runs import saved_num_labels  # noqa: E402
from compress_sweeps.planner.measure import plan_inputs, timed_against_dense, torch_threads  # noqa: E402
from compress_sweeps.reporting.plots import pareto_front  # noqa: E402


def jobs_of(sweep: Path, origin: str) -> list[dict]:
    """Every completed job of a sweep folder: its folder, deliverable, accuracy and job time."""
    rows = []
    for path in sorted(sweep.glob("*/results.json")):
        results = json.loads(path.read_text())
        if results.get("status") != "completed":
            continue
        export = results["compression"].get("int8_export") or {}
        rows.append(
            {
                "origin": origin,
                "job": path.parent.name,
                "folder": path.parent,
                "file": path.parent / export["file"] if "file" in export else None,
                "accuracy": export.get("eval/accuracy", results["metrics"]["eval/accuracy"]),
                "job_s": results["timing"]["total_s"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, action="append", required=True)
    parser.add_argument("--grid", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, default=Path("plan_vs_grid.png"))
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--group", type=int, default=4, help="models timed in one interleaved set with the dense one")
    args = parser.parse_args()
    plan = json.loads((args.plan[0] / "report" / "plan.json").read_text())
    dense_folder = Path(plan["dense"]["folder"])
    config = OmegaConf.load(dense_folder / ".hydra" / "config.yaml")
    threads = plan["table"]["identity"]["threads"]
    task = instantiate(config.task)
    dense = from_run(str(dense_folder), task.num_labels).eval()
    _, eval_set = task.datasets(tokenizer_for(dense))
    shape = plan["table"]["inputs"]
    seq_len = shape["input_ids"][1] if "input_ids" in shape else None
    inputs = plan_inputs(eval_set, task.input_keys, next(iter(shape.values()))[0], seq_len)
    rows = [row for sweep in args.plan for row in jobs_of(sweep, "plan")]
    rows += [row for sweep in args.grid for row in jobs_of(sweep, "grid")]
    with torch_threads(threads):
        models = {}
        for i, row in enumerate(rows):
            if row["file"] is not None:
                models[str(i)] = OnnxModel(row["file"], threads)
            else:
                models[str(i)] = from_run(str(row["folder"]), saved_num_labels(str(row["folder"]))).eval()
        timed = {}
        names = list(models)
        for start in range(0, len(names), args.group):  # each group in its own interleaved sets with the dense model
            group = {name: models[name] for name in names[start : start + args.group]}
            timed |= timed_against_dense(dense, group, inputs, args.repeats, args.trials)
    for i, row in enumerate(rows):
        row["latency_ratio"] = timed[str(i)]["latency_ratio"]
    frame = pd.DataFrame(rows)
    budget = plan["budget"].get("latency")
    print(f"inputs {shape}, {threads} threads, {torch.__version__}; dense {timed['dense']['latency_ms']:.1f} ms")
    for _, row in frame.sort_values(["origin", "latency_ratio"]).iterrows():
        print(f"{row['origin']:5s} {row['latency_ratio']:.3f} {row['accuracy']:.4f}  {row['job'][:90]}")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for origin, marker in (("grid", "o"), ("plan", "D")):
        mine = frame[frame["origin"] == origin]
        within = mine[mine["latency_ratio"] <= budget] if budget else mine
        best = within["accuracy"].max() if len(within) else float("nan")
        print(f"{origin}: {len(mine)} jobs, {mine['job_s'].sum() / 60:.1f} min of job time, best within the budget "
              f"{best:.4f}")  # fmt: skip
        ax.scatter(
            mine["latency_ratio"], mine["accuracy"], marker=marker, alpha=0.7, label=f"{origin} ({len(mine)} jobs)"
        )
        front = pareto_front(mine.rename(columns={"latency_ratio": "x"}), "x")
        ax.plot(front["x"], front["accuracy"], "--", linewidth=1, label=f"{origin} Pareto front")
    if budget:
        ax.axvline(budget, color="gray", linestyle=":", label=f"budget {budget:g}")
    ax.axhline(plan["dense"]["score"], color="k", linewidth=0.8, alpha=0.5, label="dense accuracy")
    ax.set(xlabel=f"latency ratio vs the dense fp32 model (re-timed, {threads} thread(s))", ylabel="eval accuracy",
           title="Planner vs a hand-made grid")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
