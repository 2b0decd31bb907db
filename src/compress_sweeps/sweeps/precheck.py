"""Check every point of a grid sweep before the first job starts, so a bad value fails in seconds, not at job 37.

Each point's config is composed the way its job will be and goes through the job's own `build` and `check` (cheap:
no data or model is loaded): the trainer and the pruner, quantizer and distiller validate their arguments, and the
cross-group checks run (schedule steps beyond the run's steps, QAT on a pruned model without pattern_lock). Checks
that need the model (a regex that matches no layer, a shape a pattern does not divide) still run at each job's start.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from compress_sweeps.errors import ConfigError, describe
from compress_sweeps.run.build import build, check, check_writable

log = logging.getLogger(__name__)


def grid_points(config: DictConfig) -> list[list[str]] | None:
    """The override list of every job of a basic (grid) sweep; None for other sweepers (e.g. Optuna samples)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    if config.hydra.sweeper.get("_target_") != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        return None
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    return BasicSweeper.split_arguments(overrides, max_batch_size=None)[0]


def job_config(config: DictConfig, point: list[str]) -> DictConfig:
    """One job's config, composed as the launcher will compose it (with its hydra node)."""
    return GlobalHydra.instance().config_loader().load_sweep_config(config, point)


def job_folder(config: DictConfig, point: list[str]) -> Path:
    """The folder the job of `point` runs in: `hydra.sweep.dir / hydra.sweep.subdir` (overrides + config id)."""
    job = job_config(config, point)
    return Path(str(job.hydra.sweep.dir)) / str(job.hydra.sweep.subdir)


def point_error(config: DictConfig, point: list[str]) -> str | None:
    """Compose one job's config, build and check its parts as the job will; return the first error, if any."""
    try:
        job = job_config(config, point)
        check(build(job), job)  # with the job's hydra node, so errors name the options it picked (pruner=none...)
    except Exception as error:  # every failure is reported, none is raised: the user sees them all at once
        return describe(error)
    return None


class SweepPrecheck(Callback):
    """Hydra callback: before a grid sweep launches, check all its points; stop with exit code 2 if any is bad."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_writable("hydra.sweep.dir", str(config.hydra.sweep.dir))
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        points = grid_points(config) if self.enabled else None
        if not points:
            return
        errors = [(point, error) for point in points if (error := point_error(config, point))]
        if errors:
            print(f"sweep not started: {len(errors)} of {len(points)} jobs have invalid settings:", file=sys.stderr)
            for point, error in errors:
                print(f"  {' '.join(point)}\n    -> {error}", file=sys.stderr)
            sys.exit(2)
        log.info("sweep precheck: %d jobs, settings valid", len(points))
