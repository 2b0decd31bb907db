"""A run's parts, built from its config and checked together, before any data or model is loaded.

`build(cfg)` instantiates what needs no data and no model (the trainer, pruner, quantizer, distiller, export and
logger); each constructor checks its own values and raises `ConfigError` naming the key. `check(parts, cfg)` checks
what no single part can see: the run's length against every method's schedule (`Describes.check`), quantization
on a pruned starting model that nothing keeps pruned, and a starting model from a run folder that did not
complete. A single run (`train.run`) and the sweep precheck (every grid point before the first job) both call the
two. Checks that need the model (a regex that matches no layer, a shape a pattern does not divide) run in each
method's `attach`, before the first optimizer step. The CLI prints any `ConfigError` as one line, exit code 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from compress_sweeps.errors import ConfigError, config_error
from compress_sweeps.hooks import Compressors
from compress_sweeps.run.artifacts import RESULTS

METHODS = ("pruner", "quantizer", "distiller")  # the order the hooks run in
PRUNED_SPARSITY = 0.01  # a starting model with more exact zeros than this counts as pruned


@dataclass
class RunParts:
    """What `build` made: the training loop, the compressors (in hook order), the export step and the logger."""

    trainer: Any
    compressors: Compressors
    export: Any
    logger: Any


def build(cfg: DictConfig) -> RunParts:
    """Instantiate every part that needs no data and no model; the first bad value raises ConfigError."""
    missing = sorted(missing_keys(cfg))
    if missing:
        raise ConfigError(missing[0], "???", "must be set (e.g. on the command line)", problem="is missing")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError("seed", cfg.seed, "must be an integer >= 0")
    return RunParts(
        trainer=_instantiate(cfg, "trainer"),
        compressors=Compressors(_instantiate(cfg, group) for group in METHODS),
        export=_instantiate(cfg, "export"),
        logger=_instantiate(cfg, "logger"),
    )


def check(parts: RunParts, cfg: DictConfig, train_size: int | None = None) -> None:
    """The checks across parts; `train_size` (examples in the training split) lets an epochs-based run count its
    optimizer steps, without it such a run's schedules are checked when the methods attach."""
    total = run_steps(parts.trainer, train_size)
    if total is not None:
        parts.compressors.check(*total)
    for key, folder, results in starting_runs(cfg.model):
        check_starting_run(key, folder, results)
        check_pruned_start(cfg, parts, key, folder, results)


def missing_keys(cfg: DictConfig) -> set[str]:
    """Keys of the parts still `???` (e.g. model=from_run without model.folder)."""
    keys = set()
    for group in ("task", "model", "trainer", *METHODS, "export"):
        if OmegaConf.is_missing(cfg, group):
            keys.add(group)
        elif isinstance(cfg.get(group), DictConfig):
            keys |= OmegaConf.missing_keys(cfg[group])  # full paths: model.folder
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


def starting_runs(model: DictConfig) -> Iterator[tuple[str, str, dict]]:
    """(key, folder, results.json) of every previous run folder the model config starts from (`model.folder` of
    model=from_run, `model.name_or_path` of model=hf pointing at a run folder, ...)."""
    for key, value in OmegaConf.to_container(model, resolve=True).items():
        if not isinstance(value, str) or key.startswith("_"):
            continue
        path = Path(value).expanduser() / RESULTS
        if path.is_file():
            try:
                yield f"model.{key}", value, json.loads(path.read_text())
            except json.JSONDecodeError:
                yield f"model.{key}", value, {"status": "unreadable"}


def check_starting_run(key: str, folder: str, results: dict) -> None:
    """A previous run used as a starting model must have completed and passed its verification."""
    status = results.get("status")
    verified = (results.get("verified") or {}).get("ok", status == "completed")
    if status != "completed" or not verified:
        state = status if status != "completed" else "unverified"
        raise ConfigError(
            key,
            folder,
            f"must be a run folder whose results.json says completed and verified (it says {state}: "
            f"{results.get('error') or 'see its results.json'})",
            problem=f"holds a {state} run",
        )


def check_pruned_start(cfg: DictConfig, parts: RunParts, key: str, folder: str, results: dict) -> None:
    """Quantization-aware training of a pruned starting model needs a method that keeps its zeros (pattern_lock),
    or training revives the pruned weights."""
    specs = parts.compressors.specs()
    if not any(s.quantization for s in specs) or any(s.keeps_zeros for s in specs):
        return
    compression = results.get("compression") or {}
    sparsity, bits = float(compression.get("sparsity") or 0.0), compression.get("bits") or 32
    if compression.get("pattern") is None and (sparsity <= PRUNED_SPARSITY or bits < 16):
        return
    raise ConfigError(
        "pruner",
        choice(cfg, "pruner"),
        f"must keep the pruned zeros (pruner=pattern_lock) when quantizer={choice(cfg, 'quantizer')} trains the "
        f"pruned model in {key}={folder} (sparsity {sparsity:.2f}); otherwise training revives its pruned weights",
        problem="does not keep the pruned zeros",
    )


def choice(cfg: DictConfig, group: str) -> str:
    """The option picked for a config group (`none`, `q8bert`...), as the user named it."""
    try:
        choices = cfg.hydra.runtime.choices if "hydra" in cfg else HydraConfig.get().runtime.choices
        return str(choices[group])
    except Exception:  # composed without Hydra's runtime config (e.g. by hand): the target names the option
        return str(cfg[group].get("_target_", group)).rsplit(".", 1)[-1]
