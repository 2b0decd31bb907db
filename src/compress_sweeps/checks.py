"""Checks before any training: a setting that cannot work fails in seconds with one line naming the key.

`check_config` runs at the very start of every job (`train.run`) and, for a grid sweep, for every point before the
first job starts (`sweeps/precheck.py`). It needs only the config (and, when known, the train-set size): it
instantiates the trainer and the compressors, whose constructors check their own values, then checks what no single
constructor can see — schedule steps beyond the run's optimizer steps, quantization-aware training on a pruned
starting model that nothing keeps pruned. Checks that need the model (a regex that matches no layer, a shape a
pattern does not divide, a distillation match naming a missing layer) run in each compressor's `attach`, before the
first optimizer step. All of them raise `ConfigError`, which the CLI prints as one line and exit code 2.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from compress_sweeps.errors import ConfigError, config_error

GROUPS = ("trainer", "pruner", "quantizer", "distiller")
PRUNED_SPARSITY = 0.01  # a starting model with more exact zeros than this (and no quantization) counts as pruned


def check_config(cfg: DictConfig, train_size: int | None = None) -> dict[str, Any]:
    """Every check that needs no data and no model; raise ConfigError on the first bad setting.

    Returns the objects it built and checked, {group: object} for the trainer, pruner, quantizer and distiller, so
    the run uses them instead of building them again. `train_size` (examples in the training split) lets an
    epochs-based run count its optimizer steps; without it such a run's schedule steps are checked at attach time.
    """
    missing = sorted(missing_keys(cfg))
    if missing:
        raise ConfigError(missing[0], "???", "must be set (e.g. on the command line)", problem="is missing")
    parts = {group: _instantiate(cfg, group) for group in GROUPS}
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError("seed", cfg.seed, "must be an integer >= 0")
    total = run_steps(parts["trainer"], train_size)
    if total is not None:
        check_steps(parts, *total)
    check_qat_on_pruned(cfg, parts)
    return parts


def missing_keys(cfg: DictConfig) -> set[str]:
    """Keys of the task, model and method groups still `???` (e.g. model=from_run without model.folder)."""
    keys = set()
    for group in ("task", "model", *GROUPS):
        if OmegaConf.is_missing(cfg, group):
            keys.add(group)
        elif isinstance(cfg.get(group), DictConfig):
            keys |= {f"{group}.{inner}" for inner in OmegaConf.missing_keys(cfg[group])}
    return keys


def _instantiate(cfg: DictConfig, group: str) -> Any:
    try:
        return instantiate(cfg[group])
    except Exception as error:
        cause = config_error(error)
        if cause is not None:
            raise cause from None
        raise


def run_steps(trainer: Any, train_size: int | None) -> tuple[int, str] | None:
    """The run's optimizer steps and how they were counted, or None when that needs the unknown train-set size."""
    if trainer.max_steps is not None:
        return trainer.max_steps, f"trainer.max_steps={trainer.max_steps}"
    if train_size is None:
        return None
    total = trainer.total_steps(train_size)
    how = (
        f"trainer.epochs={trainer.epochs} x {train_size} examples / trainer.batch_size={trainer.batch_size} / "
        f"trainer.grad_accum_steps={trainer.grad_accum_steps}"
    )
    return total, how


def check_steps(parts: Mapping[str, Any], total: int, how: str) -> None:
    """Pruning schedules and the quantizer's start must fall inside the run's `total` optimizer steps; a run of
    0 steps (calibrate and compress only) cannot distil."""
    from compress_sweeps.hooks import Passthrough

    if total == 0 and not isinstance(parts["distiller"], Passthrough):
        raise ConfigError(
            "trainer.max_steps",
            0,
            "must be >= 1 with a distiller (its loss only acts in training steps), or use distiller=none",
            problem="trains nothing",
        )
    for group in getattr(parts["pruner"], "groups", ()):
        group.schedule.resolve(total, how)
    start = getattr(parts["quantizer"], "start_step", None)
    if start is not None:
        check_quantizer_start(start, total, how)


def check_quantizer_start(start: int, total: int, how: str = "") -> None:
    if start > total:
        raise ConfigError(
            "quantizer.start_step",
            start,
            f"must be <= {total}, the run's optimizer steps{f' ({how})' if how else ''}; else nothing is quantized",
            problem="is beyond the run",
        )


def check_qat_on_pruned(cfg: DictConfig, parts: Mapping[str, Any]) -> None:
    """QAT on a pruned starting model (model=from_run) needs pruner=pattern_lock, or training revives the zeros."""
    from compress_sweeps.hooks import Passthrough
    from compress_sweeps.pruners.pattern_lock import PatternLock

    quantizer, pruner = parts["quantizer"], parts["pruner"]
    if isinstance(quantizer, Passthrough) or isinstance(pruner, PatternLock):
        return
    if not str(cfg.model.get("_target_", "")).endswith("from_run"):
        return
    folder = cfg.model.folder
    results = Path(str(folder)).expanduser() / "results.json"
    if not results.is_file():
        return
    compression = json.loads(results.read_text()).get("compression") or {}
    sparsity, bits = float(compression.get("sparsity") or 0.0), compression.get("bits") or 32
    if compression.get("pattern") is None and (sparsity <= PRUNED_SPARSITY or bits < 16):
        return
    raise ConfigError(
        "pruner",
        choice(cfg, "pruner", pruner),
        f"must be pattern_lock when quantizer={choice(cfg, 'quantizer', quantizer)} trains the pruned model in "
        f"model.folder={folder} (sparsity {sparsity:.2f}); otherwise training revives its pruned weights",
        problem="does not keep the pruned zeros",
    )


def choice(cfg: DictConfig, group: str, part: Any) -> str:
    """The option picked for a config group (`none`, `q8bert`...), as the user named it."""
    try:
        choices = cfg.hydra.runtime.choices if "hydra" in cfg else HydraConfig.get().runtime.choices
        return str(choices[group])
    except Exception:  # composed without Hydra's runtime config (e.g. by hand): the class name says enough
        return type(part).__name__
