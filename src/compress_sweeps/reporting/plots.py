"""Sweep plots: accuracy vs sparsity per pattern, accuracy vs KD temperature, accuracy vs size with the Pareto front."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

TEMPERATURE_KEYS = ("distiller.temperature",)


def _mean_std(frame: pd.DataFrame, x: str) -> pd.DataFrame:
    return frame.groupby(x)["accuracy"].agg(["mean", "std", "count"]).reset_index().fillna({"std": 0.0})


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_vs_sparsity(jobs: pd.DataFrame, out_dir: Path) -> Path | None:
    if jobs["sparsity"].nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    jobs = jobs.assign(sparsity=jobs["sparsity"].round(3), pattern=jobs["pattern"].fillna("dense").astype(str))
    dense = jobs[(jobs["pattern"] == "dense") & (jobs["sparsity"] == 0)]
    if len(dense) and len(dense) < len(jobs):  # the dense baseline as a reference line for every pattern
        ax.axhline(dense["accuracy"].mean(), color="gray", linestyle="--", label="dense baseline")
        jobs = jobs.drop(dense.index)
    for pattern, group in jobs.groupby("pattern"):
        stats = _mean_std(group, "sparsity")
        ax.errorbar(stats["sparsity"], stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=pattern)
    ax.set(xlabel="sparsity of the pruned weights (measured)", ylabel="eval accuracy", title="Accuracy vs sparsity")
    ax.grid(alpha=0.3)
    ax.legend(title="pattern")
    return _save(fig, out_dir / "accuracy_vs_sparsity.png")


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


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Points no other point beats on both axes (smaller size and higher accuracy)."""
    ordered = points.sort_values(["size_mb", "accuracy"], ascending=[True, False])
    best, keep = float("-inf"), []
    for index, row in ordered.iterrows():
        if row["accuracy"] > best:
            best = row["accuracy"]
            keep.append(index)
    return ordered.loc[keep]


def accuracy_vs_size(jobs: pd.DataFrame, out_dir: Path) -> Path | None:
    points = jobs.dropna(subset=["size_mb", "accuracy"])
    if points["size_mb"].round(6).nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(points["size_mb"], points["accuracy"], alpha=0.6, label="jobs")
    front = pareto_front(points)
    ax.plot(front["size_mb"], front["accuracy"], "r-o", label="Pareto front")
    ax.set(xlabel="model size (MB, measured)", ylabel="eval accuracy", title="Accuracy vs model size")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out_dir / "accuracy_vs_size.png")


def plot_all(jobs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every plot the sweep's data supports (a plot needs its x value to vary)."""
    made = [f(jobs, out_dir) for f in (accuracy_vs_sparsity, accuracy_vs_temperature, accuracy_vs_size)]
    return [p for p in made if p is not None]
