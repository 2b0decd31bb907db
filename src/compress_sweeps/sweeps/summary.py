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


def summarize(sweep_dir: Path, launched_at: float | None = None) -> dict[str, list[tuple[Path, dict]]]:
    """Group the sweep's job folders by the status in their results.json ('missing' when there is none).

    With `launched_at` (a time.time() value), completed jobs whose results are older than the launch were not
    run again by it: they count as 'skipped'.
    """
    groups: dict[str, list[tuple[Path, dict]]] = {"completed": [], "skipped": [], "failed": [], "missing": []}
    for folder in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir() and (p / ".hydra").is_dir()):
        try:
            results = json.loads((folder / RESULTS).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            groups["missing"].append((folder, {}))
            continue
        status = results.get("status", "missing")
        if status == "completed" and launched_at is not None and (folder / RESULTS).stat().st_mtime < launched_at:
            status = "skipped"
        groups.setdefault(status, []).append((folder, results))
    return groups


class SweepSummary(Callback):
    """Hydra callback: after a multirun, print what happened to every job and fail the command if any job failed."""

    def __init__(self, fail_on_error: bool = True) -> None:
        self.fail_on_error = fail_on_error
        self.launched_at: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.launched_at = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        groups = summarize(Path(config.hydra.sweep.dir), self.launched_at)
        counts = ", ".join(f"{len(jobs)} {status}" for status, jobs in groups.items() if jobs)
        print(f"\nsweep {config.hydra.sweep.dir}: {counts or 'no jobs'}")
        for folder, results in groups.get("failed", []):
            print(f"  FAILED {folder}: {results.get('error')}")
        for folder, _ in groups.get("missing", []):
            print(f"  NO RESULT {folder} (interrupted or still running)")
        if self.fail_on_error and (groups.get("failed") or groups.get("missing")):
            sys.exit(1)
