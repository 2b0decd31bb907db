"""`<sweep>/report/plan.json`, `plan.md` and `plan_pareto.png`: the answer of a plan and how it was reached.

The chosen run folder with its score (the task's headline metric: `plan["metric"]`, better high or low as
`plan["goal"]` says), its latency ratio and size re-measured after training beside the predicted ones, the command
that makes the same model alone, every candidate's figures and the prediction error of each, the Pareto front of the
finished candidates (score against the measured latency ratio, the dense model and the budget line drawn) and the
wall time of each step.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from compress_sweeps.objectives import short  # noqa: E402
from compress_sweeps.planner.measure import UNTIMED  # noqa: E402
from compress_sweeps.reporting.plots import pareto_front  # noqa: E402
from compress_sweeps.run.artifacts import write_json_atomic, write_text_atomic  # noqa: E402

RUNGS = {0: "dense", 1: "screened", 2: "finalist", 3: "re-cut"}


def error(predicted: Mapping[str, float], measured: Mapping[str, float], key: str) -> float | None:
    """Relative prediction error (predicted / measured - 1) of figure `key`."""
    if predicted.get(key) is None or not measured.get(key):
        return None
    return predicted[key] / measured[key] - 1


def job_row(job: Any) -> dict[str, Any]:
    return {
        "name": job.name,
        "rung": RUNGS[job.rung],
        "runtime": job.runtime,
        "kd": job.kd,
        "folder": str(job.folder) if job.folder else None,
        "status": job.results.get("status"),
        "error": job.results.get("error"),
        "score": job.score,
        "fp32_score": (job.results.get("metrics") or {}).get(job.metric),
        "screened_prediction": job.shape.predicted[job.runtime] if job.shape is not None else None,
        "predicted": job.predicted,
        "measured": job.measured,
        "latency_error": error(job.predicted, job.measured, "latency_ratio"),
        "screened_error": error(job.shape.predicted[job.runtime], job.measured, "latency_ratio") if job.shape else None,
        "timed_before_training": job.timed_before,
        "timed_before_error": error(job.timed_before or {}, job.measured, "latency_ratio"),
        "size_error": error(job.predicted, job.measured, "size_mb"),
        "overrides": job.overrides,
        "train_s": (job.results.get("timing") or {}).get("total_s"),
    }


def shell_word(override: str) -> str:
    """An override as one shell word; one holding Hydra's single quotes goes in double quotes."""
    if "'" not in override:
        return shlex.quote(override)
    return '"' + "".join("\\" + c if c in '"$`\\' else c for c in override) + '"'


def command(overrides: Sequence[str]) -> str:
    return "python -m compress_sweeps " + " ".join(shell_word(o) for o in overrides)


def standalone(overrides: Sequence[str]) -> list[str]:
    """A candidate's overrides as a run of its own: timed by itself, in a folder of its own (no `hydra.*`)."""
    return [o for o in overrides if o != UNTIMED and not o.startswith("hydra.")]


def chosen_row(job: Any, dense: Any, base: Sequence[str]) -> dict[str, Any]:
    """The answer: its row, where its deliverable is, its drop against the dense run (relative, positive: worse
    than dense, whichever way the metric goes) and how to make it alone."""
    export = (job.results.get("compression") or {}).get("int8_export") or {}
    row = job_row(job)
    worse = dense.merit - job.merit  # merits are signed scores: higher is better
    return row | {
        "deliverable": str(job.folder / export["file"]) if job.runtime != "fp32" else str(job.folder),
        "reload": command(["model=from_run", f"model.folder='{job.folder}'", "trainer=none", "logger=none"]),
        "drop_rel": worse / abs(dense.score) if dense.score else None,
        "reproduce": [command(base), command(standalone(job.overrides))],
    }


def write(plan: Mapping[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "plan.json", dict(plan))
    plot = pareto_plot(plan, folder / "plan_pareto.png")
    write_text_atomic(folder / "plan.md", markdown(plan, plot))
    return folder


def pareto_plot(plan: Mapping[str, Any], path: Path) -> Path | None:
    """The score against the measured latency ratio of every finished candidate, the dense model, the latency
    budget (when there is one) and the Pareto front (which way the score is better: `plan["goal"]`); the chosen
    model circled."""
    import pandas as pd

    rows = [j for j in plan["jobs"] if j["measured"] and j["score"] is not None]
    if not rows:
        return None
    points = pd.DataFrame({"x": [j["measured"]["latency_ratio"] for j in rows], "score": [j["score"] for j in rows]})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rung, marker in (("dense", "s"), ("screened", "o"), ("finalist", "D"), ("re-cut", "^")):
        mine = [j for j in rows if j["rung"] == rung]
        if mine:
            ax.scatter([j["measured"]["latency_ratio"] for j in mine], [j["score"] for j in mine], marker=marker,
                       label=f"{rung} ({len(mine)})", alpha=0.85)  # fmt: skip
    front = pareto_front(points, "x", "score", maximize=plan["goal"] == "maximize")
    ax.plot(front["x"], front["score"], "r--", linewidth=1, label="Pareto front")
    if "latency" in plan["budget"]:
        ax.axvline(
            plan["budget"]["latency"], color="gray", linestyle=":", label=f"budget {plan['budget']['latency']:g}"
        )
    if plan.get("chosen"):
        chosen = plan["chosen"]
        ax.scatter([chosen["measured"]["latency_ratio"]], [chosen["score"]], s=180, facecolors="none",
                   edgecolors="k", label="chosen")  # fmt: skip
    name = short(plan["metric"])
    ax.set(xlabel="latency ratio vs the dense fp32 model (re-measured after training)", ylabel=f"eval {name}",
           title=f"Plan: {name} vs measured latency")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:+.1%}"


def _figures(row: Mapping[str, Any]) -> str:
    """The measured latency ratio, ms and MB of a row, and each prediction of the ratio with its error."""
    m, p = row["measured"] or {}, row["predicted"] or {}
    if not m:
        return "| | | | | | |"
    screened, before = row["screened_prediction"] or {}, row["timed_before_training"] or {}

    def beside(figures: Mapping[str, float], err: float | None) -> str:
        return f"{figures['latency_ratio']:.3f} ({_share(err)})" if figures else ""

    return (
        f"| {m['latency_ratio']:.3f} | {beside(p, row['latency_error'])} | {beside(screened, row['screened_error'])} "
        f"| {beside(before, row['timed_before_error'])} | {m['latency_ms']:.1f} | {m['size_mb']:.1f} |"
    )


def markdown(plan: Mapping[str, Any], plot: Path | None) -> str:
    budget = ", ".join(f"{k} <= {v:g}" for k, v in plan["budget"].items())
    table, name = plan["table"], short(plan["metric"])
    lines = [f"# Plan: {budget}, best {name} ({plan['goal']})", ""]
    chosen = plan.get("chosen")
    if chosen:
        errors = [f"error {_share(chosen['latency_error'])}", f"at screening {_share(chosen['screened_error'])}"]
        if chosen["timed_before_error"] is not None:  # a re-cut shape was not timed before it trained
            errors.append(f"the untrained shape timed whole {_share(chosen['timed_before_error'])}")
        lines += [
            f"**Chosen**: `{chosen['name']}`, {name} {chosen['score']:.4f} "
            f"(dense {plan['dense']['score']:.4f}, "
            f"relative change {chosen['drop_rel']:+.2%}, positive: worse), "
            f"latency {chosen['measured']['latency_ratio']:.3f} of the dense model measured after training "
            f"(the cost table predicts {chosen['predicted']['latency_ratio']:.3f}, {'; '.join(errors)}), "
            f"{chosen['measured']['latency_ms']:.1f} ms, "
            f"{chosen['measured']['size_mb']:.1f} MB.",
            "",
            f"- run folder: `{chosen['folder']}`; delivered model: `{chosen['deliverable']}`",
            f"- reload: `{chosen['reload']}`",
            "- reproduce alone (the dense run, then the chosen model from it; `model.folder` is that dense run's "
            "folder):",
            "",
            "```bash",
            *chosen["reproduce"],
            "```",
        ]
    else:
        fastest = plan["fastest_measured"]
        lines += [
            "**No finished model met the budget when re-measured.** The fastest model the plan built: "
            f"`{fastest['name']}` at {fastest['measured'].get('latency_ratio', float('nan')):.3f} of the dense latency "
            f"({fastest['folder']}).",
        ]
    origin = "loaded from the cache" if table["cached"] else f"measured in {table['measured_s']:.0f} s"
    lines += [
        "",
        f"Timed at inputs {table['inputs']} on {table['identity']['machine']}, {table['identity']['threads']} threads; "
        f"dense fp32 model {plan['dense']['measured'].get('latency_ms', float('nan')):.1f} ms. Cost table {origin}: "
        f"`{table['file']}`.",
        "",
        f"| job | rung | {name} | latency ratio, measured after training | table's prediction (error) | predicted at "
        "screening (error) | timed whole before training (error) | ms | MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in plan["jobs"]:
        score = "" if row["score"] is None else f"{row['score']:.4f}"
        status = "" if row["status"] == "completed" else f" ({row['status']})"
        lines.append(f"| `{row['name']}`{status} | {row['rung']} | {score} {_figures(row)}")
    wall = plan["wall_s"]
    lines += ["", "Wall time (s): " + ", ".join(f"{k.removesuffix('_s')} {v:.0f}" for k, v in wall.items()), ""]
    if plot is not None:
        lines += [f"![Pareto front]({plot.name})", ""]
    return "\n".join(lines)
