"""Tasks: where the data comes from. Each config in conf/task/ points at one of these builders.

Before anything loads, the pre-launch pass checks a task config's values against its builder's signature
(schema.py) and asks this package the rest: `modality` (what kind of model the task needs) and `precheck` (what a
task's files must hold).
"""

from __future__ import annotations

import typing

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from compress_sweeps.tasks.bbc_news import bbc_news
from compress_sweeps.tasks.glue import glue
from compress_sweeps.tasks.images import ImageTask, digits, mnist5k
from compress_sweeps.tasks.text import TextTask
from compress_sweeps.tasks.text_files import check_text_files, text_files

__all__ = ["ImageTask", "TextTask", "bbc_news", "digits", "glue", "mnist5k", "modality", "precheck", "text_files"]

MODALITIES = {TextTask: "text", ImageTask: "images"}


def modality(task: DictConfig) -> str | None:
    """`text` or `images`: what the task config's builder returns (None for a builder this package does not know)."""
    returns = typing.get_type_hints(get_object(str(task._target_))).get("return")
    return MODALITIES.get(returns)


def precheck(task: DictConfig) -> list[str]:
    """The checks a task's values need beyond their types: text_files reads its files' columns, cells and labels.
    Returns the warnings (settings that run, but probably not as meant) for the run to log and record."""
    if get_object(str(task._target_)) is text_files:
        values = OmegaConf.to_container(task, resolve=True)
        keys = ("train_file", "validation_file", "text_columns", "label_column", "label_names", "label_check")
        return check_text_files(**{k: values[k] for k in keys if k in values})[1]
    return []
