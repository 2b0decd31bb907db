"""Reading a composed run config: the option a group was given as the user named it, the nodes with a `_target_`
inside the groups, and whether every model of the run (the run's, the methods' teachers) takes the data the task
gives, each as its builder declares (compress_sweeps/kinds.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from compress_sweeps import kinds
from compress_sweeps.config import config_dir
from compress_sweeps.errors import ConfigError
from compress_sweeps.schema import HYDRA_KEYS

METHODS = ("pruner", "quantizer", "distiller")  # the order the hooks run in
GROUPS = ("task", "model", "trainer", *METHODS, "export", "logger")


def choice(cfg: DictConfig, group: str) -> str:
    """The option picked for a config group (`none`, `q8bert`...), as the user named it."""
    try:
        choices = cfg.hydra.runtime.choices if "hydra" in cfg else HydraConfig.get().runtime.choices
        return str(choices[group])
    except Exception:  # composed without Hydra's runtime config (e.g. by hand): the target names the option
        return str(cfg[group].get("_target_", group)).rsplit(".", 1)[-1]


def model_nodes(cfg: DictConfig) -> Iterator[tuple[str, DictConfig]]:
    """(`prefix`, node) of the run's model and of every model inside the methods' configs (teachers)."""
    yield "model.", cfg.model
    inner = target_nodes(cfg, METHODS, below=kinds.builds_model)
    yield from ((p, node) for p, node in inner if kinds.builds_model(node))


def target_nodes(
    cfg: DictConfig, groups: tuple[str, ...], below: Callable[[DictConfig], bool] = lambda node: False
) -> Iterator[tuple[str, DictConfig]]:
    """(`prefix`, node) of every node with a `_target_` in the run's `groups`, nested ones included, except those
    inside a node for which `below` is true."""

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, DictConfig]]:
        if isinstance(node, DictConfig):
            if "_target_" in node:
                yield prefix, node
                if below(node):
                    return
            for key in node:
                if key not in HYDRA_KEYS:
                    yield from walk(node[key], f"{prefix}{key}.")

    for group in groups:
        yield from walk(cfg[group], f"{group}.")


def check_data(cfg: DictConfig) -> list[str]:
    """The task's own checks (its files), every model of the run (the model, teachers) against the data the task
    gives, each as its builder declares (compress_sweeps/kinds.py); returns the warnings."""
    warnings = kinds.precheck(cfg.task, "task.")
    given = kinds.kind_of(cfg.task)
    undeclared = [("task.", cfg.task)] if kinds.declaration(cfg.task) is None else []
    for prefix, node in model_nodes(cfg):
        warnings += kinds.precheck(node, prefix)
        undeclared += [(prefix, node)] if kinds.declaration(node) is None else []
        takes = kinds.kind_of(node)
        if given is not None and takes is not None and (problem := takes.mismatch(given)):
            value = choice(cfg, "model") if prefix == "model." else str(node._target_).rsplit(".", 1)[-1]
            fits = ", ".join(models_for(given)) or "none of conf/model/"
            raise ConfigError(
                prefix.rstrip("."),
                value,
                f"must take {given.modality} and predict {given.labels}, as task={choice(cfg, 'task')} gives "
                f"(model={fits}, or a from_run / finetuned of one)",
                problem=problem,
            )
    for prefix, node in undeclared:  # a builder from outside the package, say: nothing is matched for it
        warnings.append(
            f"{prefix}_target_={node._target_} declares no kind (compress_sweeps.kinds.builds): it is not matched "
            "against the task's data before the run"
        )
    return warnings


def models_for(given: kinds.Kind) -> list[str]:
    """The options of conf/model/ whose builder declares a kind that fits a task of kind `given`."""
    fits = []
    for path in sorted((Path(config_dir()) / "model").glob("*.yaml")):
        node = OmegaConf.load(path)
        if "_target_" in node:  # an option built on another (cnn_teacher) lists its base
            try:
                declared = kinds.kind_of(node)
            except Exception:  # a node whose kind needs run-time values (a folder): not an option to list
                continue
            if declared is not None and declared.mismatch(given) is None:
                fits.append(path.stem)
    return fits
