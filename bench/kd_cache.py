"""Bench: a K-job KD-temperature multirun with and without `distiller.cache_teacher`.

Without the cache every job runs the teacher on every training batch; with it the first job runs the teacher
once over the training split, saves its logits, and the other K-1 jobs read them back. Both sweeps share one
fresh cache folder: the first job of the first sweep fine-tunes the teacher (not counted: the fine-tuning loop
calls the model itself, not the distiller's teacher), and the no-cache sweep writes no teacher outputs, so the
cached sweep starts from an empty output cache. Prints teacher forward passes and training time per job.

    PYTHONPATH=src python bench/kd_cache.py                      # digits, CNN teacher -> CNN student, T=1,2,4
    PYTHONPATH=src python bench/kd_cache.py --temperatures 1,2,4,8 --steps 50
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

DEFAULT = [
    "experiment=polino_cnn",
    "model@distiller.teachers.main.model=cnn",  # a small teacher keeps the bench quick on a CPU
    "distiller.teachers.main.finetune.max_steps=50",
    "logger=none",
    "trainer.progress=false",
    "hydra/job_logging=disabled",
]


def sweep(temperatures: str, steps: int, cache: bool, extra: list[str], root: Path) -> tuple[list[dict], float]:
    """Run one multirun into `root/sweep-<cache>`; return each job's results.json and the sweep's wall time."""
    env = {**os.environ, "COMPRESS_SWEEPS_CACHE": str(root / "cache")}
    folder = root / f"sweep-cache-{str(cache).lower()}"
    command = [
        sys.executable, "-m", "compress_sweeps", "-m", *DEFAULT, *extra,
        f"trainer.max_steps={steps}", f"distiller.temperature={temperatures}",
        f"distiller.cache_teacher={str(cache).lower()}", f"hydra.sweep.dir={folder}",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sweep failed (cache={cache}):\n{done.stderr[-3000:]}")
    jobs = sorted(folder.glob("[0-9]*/results.json"), key=lambda p: int(p.parent.name))
    return [json.loads(path.read_text()) for path in jobs], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperatures", default="1,2,4", help="comma-separated: one job per value")
    parser.add_argument("--steps", type=int, default=30, help="student optimizer steps per job")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = parser.parse_args()
    totals = {}
    root = Path(tempfile.mkdtemp(prefix="kd_cache_bench_"))
    for cache in (False, True):
        results, wall = sweep(args.temperatures, args.steps, cache, args.overrides, root)
        print(f"\ncache_teacher={str(cache).lower()}: {len(results)} jobs, sweep wall time {wall:.1f} s")
        print(f"  {'T':>4} {'teacher forward passes':>24} {'train_s':>8} {'eval/accuracy':>14}")
        for job in results:
            metrics = job["metrics"]
            print(
                f"  {metrics['kd/temperature']:>4g} {int(metrics['kd/teacher_forward_passes']):>24d} "
                f"{job['timing']['train_s']:>8.1f} {metrics['eval/accuracy']:>14.4f}"
            )
        passes = sum(int(job["metrics"]["kd/teacher_forward_passes"]) for job in results)
        totals[cache] = (passes, sum(job["timing"]["train_s"] for job in results))
        print(f"  total: {passes} teacher forward passes, {totals[cache][1]:.1f} s training")
    (off_passes, off_time), (on_passes, on_time) = totals[False], totals[True]
    print(
        f"\nteacher forward passes: {off_passes} without the cache, {on_passes} with it "
        f"(one pass over the training split, in the first job); training time {off_time:.1f} s -> {on_time:.1f} s"
    )
    print(f"job folders and caches: {root}")


if __name__ == "__main__":
    main()
