"""Check every point of a grid sweep before the first job starts, so a bad value fails in seconds, not at job 37.

Each point's config is composed the way its job will be and goes through the job's own `build` and `check` (cheap:
no data or model is loaded): the trainer and the pruner, quantizer and distiller validate their arguments, and the
cross-group checks run (schedule steps beyond the run's steps, QAT on a pruned model without pattern_lock). Checks
that need the model (a regex that matches no layer, a shape a pattern does not divide) still run at each job's start.
Before that, for every sweeper (Optuna's too), each swept key of `hydra.sweeper.params` (and the reference sweeper's
`grids`) must name a setting of the config or a config group with known options: a typo is one line, exit code 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from compress_sweeps.errors import ConfigError, describe
from compress_sweeps.objectives import goal
from compress_sweeps.run.build import build, check
from compress_sweeps.run.folders import check_writable

log = logging.getLogger(__name__)
_ABSENT = object()  # OmegaConf.select's answer for a key the config does not have


def grid_points(config: DictConfig) -> list[list[str]] | None:
    """The override list of every job of a grid sweep (the basic sweeper, or `hydra/sweeper=reference` with its
    reference job); None for sweepers that sample (e.g. Optuna)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    sweeper_class = get_object(str(config.hydra.sweeper.get("_target_", "")))
    if not (isinstance(sweeper_class, type) and issubclass(sweeper_class, BasicSweeper)):
        return None
    settings = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
    sweeper = sweeper_class(**{key: value for key, value in settings.items() if key != "_target_"})
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [point for batch in sweeper.split_arguments(overrides, None) for point in batch]


def swept(config: DictConfig) -> list[tuple[str, str, str, str]]:
    """(where, key, value, shown) of every swept key: `hydra.sweeper.params` (any sweeper: grid, Optuna, ...) and
    the reference sweeper's `grids` and `reference`; `where` is the config path the user wrote it at, `shown` what
    they wrote there."""
    sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
    found = [(f"hydra.sweeper.params.{k}", k, str(v), str(v)) for k, v in (sweeper.get("params") or {}).items()]
    for i, grid in enumerate(sweeper.get("grids") or []):
        found += [(f"hydra.sweeper.grids[{i}].{k}", k, str(v), str(v)) for k, v in grid.items()]
    for i, override in enumerate(sweeper.get("reference") or []):  # `key=value` overrides of the reference job
        key, _, value = str(override).partition("=")
        found.append((f"hydra.sweeper.reference[{i}]", key, value, str(override)))
    return found


def check_swept_keys(config: DictConfig) -> None:
    """Every swept key names a config group (with known options) or a setting of the config, before any job is
    composed: a typo is one line naming it (a ConfigError), not a composition traceback at the first job."""
    loader = GlobalHydra.instance().config_loader()
    entries = swept(config)
    groups = {}  # swept group -> its options (as swept), to look for keys that only a chosen option brings
    for where, key, value, shown in entries:
        if key.startswith(("+", "~")) or not loader.repository.group_exists(key.partition("@")[0]):
            continue
        group = key.partition("@")[0]
        options = loader.get_group_options(group)
        chosen = _values(key, value)
        for option in chosen:
            if option not in options and option != "null":
                allowed = f"must name options of {group}: {' | '.join(options)}"
                raise ConfigError(where, shown, allowed, problem=f"is unknown ({option})")
        groups[key] = [option for option in chosen if option != "null"]
    for where, key, _, shown in entries:
        if key.startswith(("+", "~")) or key in groups or loader.repository.group_exists(key.partition("@")[0]):
            continue
        if not _has_key(config, key, groups):
            raise ConfigError(where, shown, _what_is_allowed(config, key, groups), problem="is not a setting")


def _values(key: str, value: str) -> list[str]:
    """The options a swept group value names (`a,b`, `choice(a,b)`, `a`); [] when it cannot be listed (glob)."""
    try:
        override = OverridesParser.create().parse_overrides([f"{key}={value}"])[0]
        if not override.is_sweep_override():
            return [override.get_value_element_as_str()]
        return list(override.sweep_string_iterator())
    except Exception:  # Hydra's grammar or a sweep it cannot list: the jobs' composition reports it
        return []


def _has_key(config: DictConfig, key: str, groups: dict[str, list[str]]) -> bool:
    """`key` is in the config, or in it once one of the swept group options is chosen (e.g. `pruner.pattern` with
    `pruner: magnitude,snip` swept while the default is pruner=none)."""
    return any(OmegaConf.select(job, key, default=_ABSENT) is not _ABSENT for job in _compositions(config, groups))


def _compositions(config: DictConfig, groups: dict[str, list[str]]) -> Iterator[DictConfig]:
    """The config as composed, then with each option of each swept group (composed only when asked for)."""
    yield config
    for group, options in groups.items():
        for option in options:
            try:
                yield job_config(config, [f"{group}={option}"])
            except Exception:  # an option that does not compose: the jobs' own precheck names it
                continue


def _what_is_allowed(config: DictConfig, key: str, groups: dict[str, list[str]]) -> str:
    parent, _, name = key.rpartition(".")
    names = set()
    for job in _compositions(config, groups):
        node = OmegaConf.select(job, parent, default=None) if parent else job
        names |= {str(k) for k in node} if isinstance(node, DictConfig) else set()
    near = get_close_matches(name, sorted(names), n=1)
    hint = f" (did you mean {parent + '.' if parent else ''}{near[0]}?)" if near else ""
    return f"must name a setting of the config or a config group{hint}; +{key} would add a new key"


def check_directions(config: DictConfig) -> None:
    """A sampling sweeper's `direction` (Optuna's) must go each optimized metric's way (objectives.goal): an LM's
    eval/perplexity maximized would search for the worst model, and say nothing."""
    direction = config.hydra.sweeper.get("direction")
    if direction is None:
        return
    metrics = config.get("optimized_metric")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics or [])
    directions = [direction] if isinstance(direction, str) else list(direction)
    expected = [goal(str(metric)) for metric in metrics]
    if len(directions) != len(expected) or any(str(d) != e for d, e in zip(directions, expected, strict=False)):
        shown = directions[0] if isinstance(direction, str) else f"[{', '.join(map(str, directions))}]"
        wanted = expected[0] if len(expected) == 1 else f"[{', '.join(expected)}]"
        raise ConfigError(
            "hydra.sweeper.direction",
            shown,
            f"must be {wanted} for optimized_metric={', '.join(map(str, metrics))} (one direction per metric, the "
            "way each gets better)",
            problem="goes the wrong way",
        )


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
            check_swept_keys(config)
            check_directions(config)
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
