"""End-of-sweep summary: completed, failed and skipped jobs, each failure with its folder and error."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from compress_sweeps.run.artifacts import RESULTS
from compress_sweeps.sweeps.precheck import grid_points, job_folder


def summarize(
    sweep_dir: Path, launched_at: float | None = None, jobs: list[Path] | None = None
) -> dict[str, list[tuple[Path, dict]]]:
    """Group job folders by the status in their results.json ('missing' when there is none).

    `jobs`: the folders of this launch's jobs (every job folder of `sweep_dir` when None); the sweep folder's other
    job folders, from earlier launches, go to 'older' whatever their status. With `launched_at` (a time.time()
    value), completed jobs whose results are older than the launch were not run again by it: they count as
    'skipped'.
    """
    groups: dict[str, list[tuple[Path, dict]]] = {"completed": [], "skipped": [], "failed": [], "missing": []}
    present = sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir() and (p / ".hydra").is_dir())
    launched = sorted(jobs) if jobs is not None else present
    for folder in launched:
        try:
            results = json.loads((folder / RESULTS).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            groups["missing"].append((folder, {}))
            continue
        status = results.get("status", "missing")
        if status == "completed" and launched_at is not None and (folder / RESULTS).stat().st_mtime < launched_at:
            status = "skipped"
        groups.setdefault(status, []).append((folder, results))
    groups["older"] = [(folder, {}) for folder in present if folder not in set(launched)]
    return groups


class SweepSummary(Callback):
    """Hydra callback: after a multirun, print what happened to this launch's jobs and fail the command (exit 1) if
    any of them failed; job folders of earlier launches into the same sweep folder are counted apart."""

    def __init__(self, fail_on_error: bool = True) -> None:
        self.fail_on_error = fail_on_error
        self.launched_at: float | None = None
        self.jobs: list[Path] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.launched_at = time.time()
        points = grid_points(config)  # None for sweepers that sample (Optuna): then every job folder counts
        self.jobs = None if points is None else [job_folder(config, point) for point in points]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        groups = summarize(Path(config.hydra.sweep.dir), self.launched_at, self.jobs)
        older = groups.pop("older")
        counts = ", ".join(f"{len(jobs)} {status}" for status, jobs in groups.items() if jobs)
        print(f"\nsweep {config.hydra.sweep.dir}: {counts or 'no jobs'}")
        for folder, results in groups.get("failed", []):
            print(f"  FAILED {folder}: {results.get('error')}")
        for folder, _ in groups.get("missing", []):
            print(f"  NO RESULT {folder} (interrupted or still running)")
        if older:
            print(f"  ({len(older)} job folders of earlier launches into this sweep folder are not counted)")
        if self.fail_on_error and (groups.get("failed") or groups.get("missing")):
            sys.exit(1)
