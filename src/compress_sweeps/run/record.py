"""The record of one run: results.json written whatever happens, timings, the checkpoint and the logger.

`with RunRecord(cfg) as record:` wraps a run. On the way out it always writes results.json atomically (also when the
run failed: `status: failed`, the error's root cause in one line, the traceback), removes the checkpoint of a
completed run (after results.json says so) and closes the logger with the run's exit code. Errors are recorded
and re-raised, never swallowed.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from omegaconf import DictConfig, OmegaConf

from compress_sweeps import distributed
from compress_sweeps.errors import config_error, describe
from compress_sweeps.loggers import NullLogger
from compress_sweeps.run import artifacts
from compress_sweeps.run.checkpoint import Checkpoints
from compress_sweeps.run.identity import job_id
from compress_sweeps.run.provenance import code_version
from compress_sweeps.run.verify import failures, verify

log = logging.getLogger(__name__)


class RunRecord:
    """results.json of the run in `cfg.paths.output_dir`, filled in as the run goes."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg, self.run_dir = cfg, Path(cfg.paths.output_dir)
        self.results: dict[str, Any] = {"status": "running", "error": None, "seed": cfg.seed, "job_id": job_id(cfg)}
        self.results |= {"metrics": {}, "compression": {}, "warnings": [], "code": code_version()}
        self.checkpoints = Checkpoints(self.run_dir, self.results["job_id"])  # <run_dir>/checkpoint/last.pt
        self.logger: Any = NullLogger()
        self.timing: dict[str, float] = {}
        self.started = self.lapped = time.perf_counter()
        self.results_path: Path | None = None

    def __enter__(self) -> RunRecord:
        return self

    def start_logger(self, logger: Any) -> None:
        """Open the W&B run (rank 0 only): called once the settings are known to be valid."""
        self.logger = logger if distributed.is_main() else NullLogger()
        self.logger.start(OmegaConf.to_container(self.cfg, resolve=True), self.run_dir)

    def warn(self, warnings: list[str]) -> None:
        """Settings that run but probably not as meant (the pre-launch checks' warnings): logged, and kept in
        results.json (`warnings`), where a sweep's report finds them."""
        for warning in warnings:
            log.warning("%s", warning)
        self.results["warnings"] += warnings

    def lap(self, name: str) -> None:
        """Record the seconds since the previous lap (or the start) as `timing[name]`."""
        now = time.perf_counter()
        self.timing[name], self.lapped = now - self.lapped, now

    def check_ranks(self, model: Any, compressors: Any) -> None:
        """Under torchrun: the hashes of every weight, buffer and method state on all ranks, recorded; any
        difference fails the run naming the tensors. Nothing to do in one process."""
        report = distributed.check_state(model, compressors)
        if report is None:
            return
        self.results["distributed"] = report
        if not report["state_identical"]:
            raise RuntimeError(f"ranks disagree on {report['differing']}")

    def complete(self, metrics: dict, compression: dict) -> None:
        """The finalized model's figures; the saved files re-counted by the verification gate (rank 0, which wrote
        them) must agree, or the run fails naming the check."""
        self.results |= {"metrics": metrics, "compression": compression}
        self.results["verified"] = distributed.on_rank_zero(verify, self.run_dir, self.results)
        if not self.results["verified"]["ok"]:
            raise RuntimeError(f"verification failed: {failures(self.results['verified'])}")
        self.results["status"] = "completed"

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if error is not None:
            trail = "".join(traceback.format_exception(kind, error, trace))
            self.results |= {"status": "failed", "error": describe(error), "traceback": trail}
            if distributed.world_size() > 1:
                self.results["failed_rank"] = distributed.rank()
        self.timing["total_s"] = time.perf_counter() - self.started
        self.results["timing"] = self.timing
        self.results["resumed_from_step"] = self.checkpoints.resumed_from  # null: trained from step 1
        completed = self.results["status"] == "completed"
        if distributed.is_main() or not completed:  # a failing rank > 0 stops rank 0 too
            self.results_path = self.write_results()
        if completed and distributed.is_main():  # after results.json: never resumed
            self.checkpoints.remove()
        if error is not None and config_error(error) is None:  # the one line a user reads (a bad setting: the CLI's)
            log.error("run failed: %s (results and traceback: %s)", describe(error), self.results_path)
        self.logger.finish(self.results, exit_code=0 if completed else 1)

    def write_results(self) -> Path | None:
        """results.json in the run folder or, when that cannot be written (disk full, read-only), beside it or in
        the cache folder, saying where and why in one line; the run's figures are never dropped silently."""
        target = self.run_dir / artifacts.RESULTS
        fallbacks = (
            self.run_dir.parent / f"{self.run_dir.name}.{artifacts.RESULTS}",
            Path(str(self.cfg.paths.cache_dir)).expanduser() / "results" / f"{self.results['job_id']}.json",
        )
        failures = []
        for path in (target, *fallbacks):
            try:
                artifacts.write_json_atomic(path, self.results)
            except OSError as error:
                failures.append(error.strerror or str(error))
                continue
            if failures:
                print(f"error: {failures[0]}; the results are in {path}", file=sys.stderr)
            return path
        print(f"error: {'; '.join(failures)}; the results follow:\n{json.dumps(self.results)}", file=sys.stderr)
        return None
