"""Hydra sweeper plugin `hydra/sweeper=plan` (conf/hydra/sweeper/plan.yaml, selected by `sweep=plan`): the
planner's rounds of jobs through the sweep's launcher. Hydra loads plugins only from the `hydra_plugins`
namespace; the logic is in `compress_sweeps.planner`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class PlanSweeper(Sweeper):
    """Launches the dense run, the screened candidates and the finalists a plan asks for, batch after batch."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.launcher = None
        self.job_index = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def launch(self, batch: Sequence[Sequence[str]]) -> Any:
        returns = self.launcher.launch([list(b) for b in batch], initial_job_idx=self.job_index)
        self.job_index += len(batch)
        return returns

    def sweep(self, arguments: list[str]) -> Any:
        from compress_sweeps.errors import config_error
        from compress_sweeps.planner.plan import Planner

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        try:
            plan = Planner(self.config, arguments, self.launch).run()
        except Exception as error:
            if (problem := config_error(error)) is None:
                raise
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(2)
        print(f"\nplan written to {sweep_dir / 'report' / 'plan.md'}")
        return plan
