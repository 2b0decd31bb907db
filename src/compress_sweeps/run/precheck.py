"""Before a single run starts, even before Hydra makes its folder: its folder and every setting, checked.

A Hydra callback (`hydra.callbacks.run_precheck` in conf/train.yaml). On a bad setting it prints one
`error: <key>=<value> <problem>: <what is allowed>` line and exits with code 2 (any other error of the checks too,
as in the sweep precheck: Hydra would only warn about it and start the run): no folder, no log, no W&B run and
no checkpoint is made, and no earlier result is touched. It refuses a run folder that already holds a completed run
(`hydra.run.dir=<that folder>`), which re-running would overwrite; a failed or interrupted run there is resumed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from compress_sweeps.errors import ConfigError, config_error, describe
from compress_sweeps.run.artifacts import RESULTS
from compress_sweeps.run.build import build, check
from compress_sweeps.run.folders import check_writable


def check_run_folder(key: str, folder: str) -> None:
    """A run's folder: creatable and writable, and not holding a completed run."""
    check_writable(key, folder)
    try:
        status = json.loads((Path(folder).expanduser() / RESULTS).read_text()).get("status")
    except (OSError, ValueError):
        return
    if status == "completed":
        raise ConfigError(
            key,
            folder,
            "must be a new folder (or one whose run failed or was interrupted, which resumes): this run would "
            "overwrite the results there",
            problem="holds a completed run",
        )


class RunPrecheck(Callback):
    """Hydra callback: check a single run before it starts; print one line and exit 2 on a bad setting."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_run_folder("hydra.run.dir", str(config.hydra.run.dir))
            check(build(config), config)  # with Hydra's node: errors name the options picked (pruner=none...)
        except Exception as error:  # Hydra only warns about a callback's exception and starts the run: stop here
            problem = config_error(error)
            print(f"error: {problem if problem is not None else describe(error)}", file=sys.stderr)
            sys.exit(2)  # as the sweep precheck does for any error of a grid point
