"""Sweep overhead and parallel speed-up, measured side by side in one run (the machines are shared and noisy).

Launches the same 12-job grid of short image runs twice, into fresh folders:
  1. the basic launcher (jobs one after another in one process);
  2. the joblib launcher with 2 workers (each job limited to cores/2 torch threads).
Prints (sweep wall time) / (sum of the jobs' own run time from their results.json) for the basic launcher — the
cost of Hydra, process start and bookkeeping on top of the work (goal <= 1.10) — and the joblib speed-up over the
basic launcher (goal >= 1.6x on 2 cores).

    python bench/sweep_overhead.py [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep(folder: Path, steps: int, extra: list[str]) -> tuple[float, float]:
    """Run the grid; return (wall seconds, sum of the jobs' own total_s)."""
    command = [
        sys.executable,
        "-m",
        "compress_sweeps",
        "-m",
        "task=digits",
        "model=cnn",
        "logger=none",
        "trainer.progress=false",
        f"trainer.max_steps={steps}",
        "trainer.eval_every=null",
        "trainer.lr=1e-3,2e-3,3e-3",
        "seed=0,1,2,3",
        f"hydra.sweep.dir={folder}",
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    jobs = [json.loads(p.read_text()) for p in folder.glob("*/results.json")]
    if len(jobs) != 12 or any(j["status"] != "completed" for j in jobs):
        raise RuntimeError(f"expected 12 completed jobs in {folder}, found {len(jobs)}")
    return wall, sum(j["timing"]["total_s"] for j in jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per job")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("COMPRESS_SWEEPS_CACHE", str(Path(tmp) / "cache"))
        basic_wall, basic_work = sweep(Path(tmp) / "basic", args.steps, [])
        joblib_wall, _ = sweep(Path(tmp) / "joblib", args.steps, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    print(f"cores: {os.cpu_count()}, 12 jobs x {args.steps} steps (digits, cnn)")
    print(
        f"basic launcher: wall {basic_wall:.1f} s, jobs' own time {basic_work:.1f} s, "
        f"overhead ratio {basic_wall / basic_work:.3f} (goal <= 1.10)"
    )
    print(
        f"joblib (2 workers): wall {joblib_wall:.1f} s, speed-up over basic {basic_wall / joblib_wall:.2f}x "
        "(goal >= 1.6x)"
    )


if __name__ == "__main__":
    main()
