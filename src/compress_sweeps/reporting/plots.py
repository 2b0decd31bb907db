"""Sweep plots: the score (accuracy, or an LM's perplexity) against the measured latency ratio and the measured
size, every recipe on the same axes with the Pareto front over all of them; the score vs KD temperature. File names
and axes carry the metric's name; the front follows its goal (higher accuracy, lower perplexity).

The x-axes are measured on the finalized models, never a setting: the latency ratio is the model's time over the
dense model's of the same architecture, timed interleaved in the job's own process (batch 32, fp32 PyTorch), so
jobs that ran on different machines or under different load still share one axis; the size is the storage of the
saved weights (sparse or quantized storage where that is smaller).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from compress_sweeps.objectives import goal, short  # noqa: E402

TEMPERATURE_KEYS = ("distiller.temperature",)
MARKERS = "osD^v<>pPX*h"
ACCURACY = "eval/accuracy"


def _mean_std(frame: pd.DataFrame, x: str) -> pd.DataFrame:
    return frame.groupby(x)["score"].agg(["mean", "std", "count"]).reset_index().fillna({"std": 0.0})


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def settings_points(jobs: pd.DataFrame, x: str, swept: Sequence[str] = ()) -> pd.DataFrame:
    """One point per recipe and swept setting (seeds averaged): mean `x`, mean and std of the score."""
    keys = ["recipe", *[k for k in swept if k in jobs and k != "recipe"]]
    points = jobs.dropna(subset=[x, "score"]).assign(**{k: jobs[k].astype(str) for k in keys if k in jobs})
    grouped = points.groupby(keys, dropna=False)
    return grouped.agg(x=(x, "mean"), score=("score", "mean"), std=("score", "std")).reset_index().fillna({"std": 0.0})


def pareto_front(points: pd.DataFrame, x: str = "size_mb", y: str = "accuracy", maximize: bool = True) -> pd.DataFrame:
    """Points no other point beats on both axes (smaller `x`, and higher `y`, or lower with `maximize=False`)."""
    sign = 1.0 if maximize else -1.0
    ordered = points.assign(_quality=sign * points[y]).sort_values([x, "_quality"], ascending=[True, False])
    best, keep = float("-inf"), []
    for index, row in ordered.iterrows():
        if row["_quality"] > best:
            best = row["_quality"]
            keep.append(index)
    return ordered.loc[keep].drop(columns="_quality")


def score_vs(jobs: pd.DataFrame, out_dir: Path, x: str, label: str, metric: str, swept: Sequence[str] = ()):
    """The score against a measured `x`, one marker per recipe (seeds averaged, std as error bars), and the Pareto
    front over every recipe; `<metric>_vs_<x>.png`."""
    points = settings_points(jobs, x, swept)
    if points["x"].round(6).nunique() < 2:
        return None
    name = short(metric)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (recipe, group) in enumerate(points.groupby("recipe", sort=True)):
        ax.errorbar(group["x"], group["score"], yerr=group["std"], fmt=MARKERS[i % len(MARKERS)], capsize=3,
                    label=recipe, alpha=0.85)  # fmt: skip
    front = pareto_front(points, "x", "score", maximize=goal(metric) == "maximize")
    ax.plot(front["x"], front["score"], "r--", linewidth=1, label="Pareto front")
    if x == "latency_ratio":
        ax.axvline(1.0, color="gray", linestyle=":", linewidth=1, label="dense model")
    better = "higher" if goal(metric) == "maximize" else "lower"
    ax.set(
        xlabel=label, ylabel=f"eval {name} ({better} is better)", title=f"{name.capitalize()} vs {label.split(' (')[0]}"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, out_dir / f"{name}_vs_{'latency' if x == 'latency_ratio' else 'size'}.png")


def score_vs_latency(jobs: pd.DataFrame, out_dir: Path, swept: Sequence[str] = (), metric: str = ACCURACY):
    label = "latency ratio vs the dense model (measured, batch 32, fp32)"
    return score_vs(jobs, out_dir, "latency_ratio", label, metric, swept)


def score_vs_size(jobs: pd.DataFrame, out_dir: Path, swept: Sequence[str] = (), metric: str = ACCURACY):
    return score_vs(jobs, out_dir, "size_mb", "model size (MB, measured)", metric, swept)


def score_vs_temperature(jobs: pd.DataFrame, out_dir: Path, metric: str = ACCURACY) -> Path | None:
    key = next((k for k in TEMPERATURE_KEYS if k in jobs and jobs[k].nunique() > 1), None)
    if key is None:
        return None
    name = short(metric)
    stats = _mean_std(jobs.assign(**{key: pd.to_numeric(jobs[key])}), key)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(stats[key], stats["mean"], yerr=stats["std"], marker="o", capsize=3, label="student (mean ± std)")
    ax.set(xlabel="KD temperature T", ylabel=f"eval {name}", title=f"{name.capitalize()} vs KD temperature")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out_dir / f"{name}_vs_temperature.png")


def plot_all(jobs: pd.DataFrame, out_dir: Path, swept: Sequence[str] = (), metric: str = ACCURACY) -> list[Path]:
    """Every plot the sweep's data supports (a plot needs its x value to vary); `score` holds `metric`."""
    made = [
        score_vs_latency(jobs, out_dir, swept, metric),
        score_vs_size(jobs, out_dir, swept, metric),
        score_vs_temperature(jobs, out_dir, metric),
    ]
    return [p for p in made if p is not None]
