"""`compress-sweeps [overrides]` / `python -m compress_sweeps [overrides]`: one run, or a sweep with -m.

`compress-sweeps report <sweep folder>` turns a finished sweep into a table and plots; `compress-sweeps dashboard
<sweep folder>` builds the sweep's W&B report (offline: its definition, to publish later with `--publish`);
`compress-sweeps verify <run folder>` re-counts a run from its saved files; `compress-sweeps results <sweep
folders>` writes the results tables of docs/results.md from the `results_*` sweeps; `compress-sweeps wandb-sweep
sweeps/<name>.yaml` writes the equivalent W&B sweep configuration. The Hydra task function
lives here, in an importable module, so launchers that pickle it (joblib, submitit) import this module in their
workers, which registers the config resolvers there too. Under `torchrun --nproc_per_node N` every process
runs this same CLI; see distributed.py for what they share.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from compress_sweeps import distributed, train
from compress_sweeps.config import config_dir
from compress_sweeps.errors import config_error
from compress_sweeps.run.identity import completed_result

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | tuple[float, ...]:
    """Run one job; return its optimized metric so Hydra sweepers (e.g. Optuna) can optimize it.

    In a sweep, a job whose folder already holds a completed run of the same config is skipped (resume), and a
    job that fails is recorded (results.json, W&B) without stopping the jobs after it. A single run with a bad
    setting (a ConfigError) prints one `error: <key>=<value> ...` line and exits with code 2; a run that fails
    otherwise has logged one `run failed: ...` line naming its results.json (which holds the traceback): exit 1.
    """
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        try:
            return train.run(cfg)
        except Exception as error:
            if (problem := config_error(error)) is not None:
                print(f"error: {problem}", file=sys.stderr)
            sys.exit(2 if problem is not None else 1)  # SystemExit passes through Hydra without its traceback
    done = completed_result(HydraConfig.get().runtime.output_dir, cfg)
    if done is not None:
        log.info("skip: already completed in %s", HydraConfig.get().runtime.output_dir)
        return train.objective(done, cfg.optimized_metric)
    try:
        return train.run(cfg)
    except Exception as error:  # recorded by train.run; the sweep summary reports it and exits non-zero
        print(f"job failed ({type(error).__name__}: {error}); the sweep goes on", file=sys.stderr)
        return math.nan if isinstance(cfg.optimized_metric, str) else tuple(math.nan for _ in cfg.optimized_metric)


def plan_argument_error(argv: list[str]) -> str | None:
    """A `plan.<key>=` on the command line that is no setting of the planner, or that comes without `sweep=plan`:
    Hydra would stop it with its own multi-line message and exit 1; this says what is wrong in one line (exit 2).
    The values themselves are checked by the planner, before anything loads."""
    from compress_sweeps.planner.settings import setting_names

    plan = [a for a in argv if a.lstrip("+~").startswith("plan.")]
    if not plan:
        return None
    key, _, value = plan[0].lstrip("+~").partition("=")
    if "sweep=plan" not in argv or not any(a in ("-m", "--multirun") for a in argv):
        return f"{key}={value} needs the planner: python -m compress_sweeps -m sweep=plan {plan[0]}"
    for argument in plan:
        key, _, value = argument.lstrip("+~").partition("=")
        name = key.removeprefix("plan.").split(".")[0]
        if name not in setting_names():
            return f"{key}={value} is not a setting: must be one of plan.{{{', '.join(setting_names())}}}"
    return None


def choice_error(argv: list[str]) -> str | None:
    """A config-group choice on the command line (`pruner=obs`, `pruner/method=obs`, `model@x=obs`, a sweep's
    `pruner=a,obs`) naming no option of its group: Hydra would stop it with its own multi-line message and exit 1;
    this says what is wrong and what is allowed in one line (exit 2). With `hydra.searchpath` set, other folders
    add options: Hydra decides then."""
    if any(a.lstrip("+~").startswith("hydra.searchpath") for a in argv):
        return None
    for argument in argv:
        key, equals, value = argument.lstrip("+~").partition("=")
        name = key.split("@", 1)[0]
        group = Path(config_dir()) / name
        if not equals or not name or "." in name or name.startswith("hydra") or not group.is_dir() or "(" in value:
            continue  # not a group choice, Hydra's own groups (plugins add options), or a sweep function
        options = sorted(p.stem for p in group.glob("*.yaml"))
        for option in (v.strip() for v in value.split(",")):
            if option and option != "null" and option not in options:
                return f"{key}={option} is not an option: must be one of {' | '.join(options)}"
    return None


def cli() -> None:
    """Console script: subcommands first (`report`, `dashboard`, `verify`, `results`, `wandb-sweep`), anything else
    is a Hydra run or sweep."""
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "report":
        from compress_sweeps.reporting.report import report_main

        sys.exit(report_main(sys.argv[2:]))
    if command == "dashboard":
        from compress_sweeps.reporting.dashboard import dashboard_main

        sys.exit(dashboard_main(sys.argv[2:]))
    if command == "verify":
        from compress_sweeps.run.verify import verify_main

        sys.exit(verify_main(sys.argv[2:]))
    if command == "results":
        from compress_sweeps.reporting.results_table import results_main

        sys.exit(results_main(sys.argv[2:]))
    if command == "wandb-sweep":
        from compress_sweeps.sweeps.wandb_sweep import wandb_sweep_main

        sys.exit(wandb_sweep_main(sys.argv[2:]))
    if (problem := plan_argument_error(sys.argv[1:]) or choice_error(sys.argv[1:])) is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    distributed.setup()  # under torchrun: join the process group before Hydra names the run folder
    sys.argv += distributed.rank_overrides()
    try:
        main()
    finally:
        distributed.teardown()
