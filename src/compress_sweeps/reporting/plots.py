"""Sweep plots: accuracy against the measured latency ratio and the measured size, every recipe on the same axes
with the Pareto front over all of them; accuracy vs KD temperature.

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

TEMPERATURE_KEYS = ("distiller.temperature",)
MARKERS = "osD^v<>pPX*h"


def _mean_std(frame: pd.DataFrame, x: str) -> pd.DataFrame:
    return frame.groupby(x)["accuracy"].agg(["mean", "std", "count"]).reset_index().fillna({"std": 0.0})


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def settings_points(jobs: pd.DataFrame, x: str, swept: Sequence[str] = ()) -> pd.DataFrame:
    """One point per recipe and swept setting (seeds averaged): mean `x`, mean and std of the accuracy."""
    keys = ["recipe", *[k for k in swept if k in jobs and k != "recipe"]]
    points = jobs.dropna(subset=[x, "accuracy"]).assign(**{k: jobs[k].astype(str) for k in keys if k in jobs})
    grouped = points.groupby(keys, dropna=False)
    return (
        grouped.agg(x=(x, "mean"), accuracy=("accuracy", "mean"), std=("accuracy", "std"))
        .reset_index()
        .fillna({"std": 0.0})
    )


def pareto_front(points: pd.DataFrame, x: str = "size_mb") -> pd.DataFrame:
    """Points no other point beats on both axes (smaller `x` and higher accuracy)."""
    ordered = points.sort_values([x, "accuracy"], ascending=[True, False])
    best, keep = float("-inf"), []
    for index, row in ordered.iterrows():
        if row["accuracy"] > best:
            best = row["accuracy"]
            keep.append(index)
    return ordered.loc[keep]


def accuracy_vs(jobs: pd.DataFrame, out_dir: Path, x: str, label: str, name: str, swept: Sequence[str] = ()):
    """Accuracy against a measured `x`, one marker per recipe (seeds averaged, std as error bars), and the Pareto
    front over every recipe."""
    points = settings_points(jobs, x, swept)
    if points["x"].round(6).nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (recipe, group) in enumerate(points.groupby("recipe", sort=True)):
        ax.errorbar(group["x"], group["accuracy"], yerr=group["std"], fmt=MARKERS[i % len(MARKERS)], capsize=3,
                    label=recipe, alpha=0.85)  # fmt: skip
    front = pareto_front(points, "x")
    ax.plot(front["x"], front["accuracy"], "r--", linewidth=1, label="Pareto front")
    if x == "latency_ratio":
        ax.axvline(1.0, color="gray", linestyle=":", linewidth=1, label="dense model")
    ax.set(xlabel=label, ylabel="eval accuracy", title=f"Accuracy vs {label.split(' (')[0]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, out_dir / name)


def accuracy_vs_latency(jobs: pd.DataFrame, out_dir: Path, swept: Sequence[str] = ()) -> Path | None:
    label = "latency ratio vs the dense model (measured, batch 32, fp32)"
    return accuracy_vs(jobs, out_dir, "latency_ratio", label, "accuracy_vs_latency.png", swept)


def accuracy_vs_size(jobs: pd.DataFrame, out_dir: Path, swept: Sequence[str] = ()) -> Path | None:
    return accuracy_vs(jobs, out_dir, "size_mb", "model size (MB, measured)", "accuracy_vs_size.png", swept)


def accuracy_vs_temperature(jobs: pd.DataFrame, out_dir: Path) -> Path | None:
    key = next((k for k in TEMPERATURE_KEYS if k in jobs and jobs[k].nunique() > 1), None)
    if key is None:
        return None
    stats = _mean_std(jobs.assign(**{key: pd.to_numeric(jobs[key])}), key)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(stats[key], stats["mean"], yerr=stats["std"], marker="o", capsize=3, label="student (mean ± std)")
    ax.set(xlabel="KD temperature T", ylabel="eval accuracy", title="Accuracy vs KD temperature")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out_dir / "accuracy_vs_temperature.png")


def plot_all(jobs: pd.DataFrame, out_dir: Path, swept: Sequence[str] = ()) -> list[Path]:
    """Every plot the sweep's data supports (a plot needs its x value to vary)."""
    made = [
        accuracy_vs_latency(jobs, out_dir, swept),
        accuracy_vs_size(jobs, out_dir, swept),
        accuracy_vs_temperature(jobs, out_dir),
    ]
    return [p for p in made if p is not None]
