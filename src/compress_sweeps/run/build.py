"""A run's parts, built from its config and checked together, before any data or model is loaded.

`build(cfg)` instantiates what needs no data and no model (the trainer, pruner, quantizer, distiller, export and
logger); each constructor checks its own values and raises `ConfigError` naming the key. `check(parts, cfg)` checks
what no single part can see: the run's length against every method's schedule (`Describes.check`), quantization
on a pruned starting model that nothing keeps pruned, a starting model from a run folder that did not complete,
combinations that leave a method nothing to do (a post-training quantizer without the export that builds its int8
model, a model "fine-tuned" for 0 steps), every `paths.*` folder, and the task's files; it returns the warnings
(settings that run, but probably not as meant) for the run to log and record. A single run (`train.run`, and its
Hydra callback run/precheck.py) and the sweep precheck (every grid point before the first job) all call the two.
Checks that need the model (a regex that matches no layer, a shape a pattern does not divide) run in each method's
`attach`, before the first optimizer step. The CLI prints any `ConfigError` as one line, exit code 2.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Annotated, Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from pydantic import Field

from compress_sweeps.config import config_dir
from compress_sweeps.errors import ConfigError, config_error, describe
from compress_sweeps.hooks import Compressors, FineTuner
from compress_sweeps.objectives import CLASSIFICATION, Objective, objective_of
from compress_sweeps.run.folders import check_paths, check_pruned_start, check_starting_run, starting_runs
from compress_sweeps.run.measure import MEASURED, TIMED
from compress_sweeps.run.nodes import GROUPS, METHODS, check_data, choice, target_nodes
from compress_sweeps.schema import check_node, check_value, parameters


@dataclass
class RunParts:
    """What `build` made: the training loop, the compressors (in hook order), the export step and the logger, and
    the objective of the task's predictions (classes or next tokens: the loss trained on, the metrics evaluated)."""

    trainer: Any
    compressors: Compressors
    export: Any
    logger: Any
    objective: Objective = CLASSIFICATION


def build(cfg: DictConfig) -> RunParts:
    """Check every value against its schema, then instantiate every part that needs no data and no model; the first
    bad value raises ConfigError."""
    missing = sorted(missing_keys(cfg))
    if missing:
        raise ConfigError(missing[0], "???", "must be set (e.g. on the command line)", problem="is missing")
    check_run_keys(cfg)
    for group in GROUPS:  # types and ranges of every key, the task's and the model's included (nothing is loaded)
        check_node(cfg[group], f"{group}.")
    return RunParts(
        trainer=_instantiate(cfg, "trainer"),
        compressors=Compressors(_instantiate(cfg, group) for group in METHODS),
        export=_instantiate(cfg, "export"),
        logger=_instantiate(cfg, "logger"),
        objective=objective_of(cfg.task),
    )


def check(parts: RunParts, cfg: DictConfig, train_size: int | None = None) -> list[str]:
    """The checks across parts; `train_size` (examples in the training split) lets an epochs-based run count its
    optimizer steps, without it such a run's schedules are checked when the methods attach. Returns the warnings:
    settings that run but probably not as meant (a validation file that is the training file), which the run logs
    and records in results.json."""
    total = run_steps(parts.trainer, train_size)
    if total is not None:
        parts.compressors.check(*total)
    check_objective(cfg.optimized_metric, parts.objective.metrics, cfg.measure_latency)
    check_shadows(parts, cfg)
    check_paths(cfg)
    check_export(parts, cfg)
    check_finetuners(cfg)
    for key, folder, results in starting_runs(cfg.model):
        check_starting_run(key, folder, results)
        check_pruned_start(cfg, parts.compressors.specs(), key, folder, results)
    return check_data(cfg)


def check_shadows(parts: RunParts, cfg: DictConfig) -> None:
    """At most one method may keep its own copy of the weights and write it back before each optimizer step: a
    second one's copy would overwrite the first's (pruned weights restarting near zero every step under
    pruner=neural_wiring with quantization-aware training)."""
    shadowing = [s.method for s in parts.compressors.specs() if s.shadows_weights]
    if len(shadowing) > 1:
        raise ConfigError(
            "quantizer",
            choice(cfg, "quantizer"),
            f"must not train alongside {shadowing[0]}: both keep a full-precision copy of the weights and write it "
            "back before each optimizer step, so one overwrites the other; prune first, then train on with "
            "pruner=pattern_lock and this quantizer (as Prune-Once-for-All does), or use a post-training "
            "quantizer (ptq_dynamic | ptq_static)",
            problem=f"conflicts with {shadowing[0]}",
        )


def check_export(parts: RunParts, cfg: DictConfig) -> None:
    """A method whose result is the int8 model an export builds after finalize (post-training int8: its spec names
    the export's activations, `int8_export`) does nothing unless the run's export builds that int8 model."""
    for spec in parts.compressors.specs():
        if spec.int8_export is None or parts.export.int8 == spec.int8_export:
            continue
        builds = export_options(spec.int8_export)
        quantizer = choice(cfg, "quantizer")
        raise ConfigError(
            "export",
            choice(cfg, "export"),
            f"must be {' | '.join(builds)} with quantizer={quantizer}, which quantizes nothing itself: its int8 "
            f"model is the one the export builds after training (quantizer=none runs without one)",
            problem=f"builds no int8 model of {spec.int8_export} activations",
        )


def export_options(activations: str) -> list[str]:
    """The `export` options (conf/export/*.yaml) whose export builds an int8 model of `activations`."""
    found = []
    for path in sorted((config_dir() / "export").glob("*.yaml")):
        if getattr(get_object(str(OmegaConf.load(path)._target_)), "int8", None) == activations:
            found.append(path.stem)
    return found


def check_finetuners(cfg: DictConfig) -> None:
    """A training loop handed to a model builder or a teacher to fine-tune a model once (a `FineTuner` parameter:
    `model.finetune` of model=finetuned, a teacher's `finetune`) must train: at 0 steps the model as built would be
    cached and used as fine-tuned (a random head compressed at chance accuracy)."""
    for prefix, node in target_nodes(cfg, ("model", *METHODS)):  # where models are built (the run's, teachers)
        for name, hint in parameters(get_object(str(node._target_))).items():
            value = node.get(name)
            if not (isinstance(value, DictConfig) and "_target_" in value and _is_finetuner(hint)):
                continue
            if instantiate(value).total_steps(1) == 0:  # epochs give at least one step; only max_steps=0 gives none
                instead = (
                    f"{prefix}{name}=null uses it as built"
                    if prefix != "model."
                    else "the model as built is its own config: model=minilm, model=cnn, ..."
                )
                raise ConfigError(
                    f"{prefix}{name}.max_steps",
                    0,
                    f"must be >= 1: {prefix}{name} fine-tunes the model before the run uses it as fine-tuned, and at "
                    f"0 steps the untrained model would be cached as fine-tuned ({instead})",
                    problem="fine-tunes nothing",
                )


def _is_finetuner(hint: Any) -> bool:
    return hint is FineTuner or FineTuner in typing.get_args(hint)


def check_objective(optimized_metric: Any, evaluated: tuple[str, ...], timed: bool = True) -> None:
    """What a run returns to a sweeper must be among what it measures: found out before training, not after."""
    known = [*evaluated, *(f"compression/{key}" for key in MEASURED if timed or key not in TIMED)]
    names = [optimized_metric] if isinstance(optimized_metric, str) else list(optimized_metric)
    for name in names:
        if name not in known:
            raise ConfigError(
                "optimized_metric", name, f"must be one of {' | '.join(known)}", problem="is not measured"
            )


def missing_keys(cfg: DictConfig) -> set[str]:
    """Keys of the parts still `???` (e.g. model=from_run without model.folder)."""
    keys = set()
    for group in GROUPS:
        if OmegaConf.is_missing(cfg, group):
            keys.add(group)
        elif isinstance(cfg.get(group), DictConfig):
            keys |= OmegaConf.missing_keys(cfg[group])  # full paths: model.folder
    return keys


def check_run_keys(cfg: DictConfig) -> None:
    """The run-level keys of conf/train.yaml, which belong to no `_target_`."""
    check_value(Annotated[int, Field(ge=0)], cfg.seed, "seed")
    check_value(Annotated[int, Field(ge=1)] | None, cfg.threads, "threads")
    check_value(str | Annotated[list[str], Field(min_length=1)], _plain(cfg.optimized_metric), "optimized_metric")
    check_value(bool, cfg.measure_latency, "measure_latency")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _instantiate(cfg: DictConfig, group: str) -> Any:
    """The group's part, built; any error its constructor raises is a ConfigError naming the group (what the sweep
    precheck and a single run both report as a bad setting, exit 2)."""
    try:
        return instantiate(cfg[group])
    except Exception as error:
        cause = config_error(error)
        if cause is not None:
            raise cause from None
        reason = describe(error).splitlines()[0]
        allowed = f"its settings raised {reason}"
        raise ConfigError(group, choice(cfg, group), allowed, problem="cannot be built") from None


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
