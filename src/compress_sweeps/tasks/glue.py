"""Any GLUE task through `datasets.load_dataset` (a hub path: needs internet or a local copy)."""

from __future__ import annotations

from typing import Literal

import datasets

from compress_sweeps.hub import check_hub_source
from compress_sweeps.kinds import Kind, builds
from compress_sweeps.schema import check_arguments
from compress_sweeps.tasks.settings import Examples, MaxLength, Seed
from compress_sweeps.tasks.text import TextTask, subsample

# text columns and the validation split of each GLUE task (test splits carry no labels)
GLUE_TASKS: dict[str, tuple[list[str], str]] = {
    "cola": (["sentence"], "validation"),
    "sst2": (["sentence"], "validation"),
    "mrpc": (["sentence1", "sentence2"], "validation"),
    "qqp": (["question1", "question2"], "validation"),
    "stsb": (["sentence1", "sentence2"], "validation"),
    "mnli": (["premise", "hypothesis"], "validation_matched"),
    "qnli": (["question", "sentence"], "validation"),
    "rte": (["sentence1", "sentence2"], "validation"),
    "wnli": (["sentence1", "sentence2"], "validation"),
}

LOCAL_DATA_HINT = (
    "Point task.path at a local copy laid out like the hub's nyu-mll/glue (README.md configs + data files), or use "
    "task=text_files with your own CSV/JSON/Parquet files."
)


@builds("task", Kind("text"))
def glue(
    name: Literal["cola", "sst2", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli"] = "sst2",  # stsb is regression
    path: str = "nyu-mll/glue",
    max_length: MaxLength = 128,
    max_train_examples: Examples | None = None,
    max_eval_examples: Examples | None = None,
    split_seed: Seed = 0,
    cache_dir: str | None = None,
) -> TextTask:
    """Load GLUE task `name` from `path` (the hub dataset, or a local folder laid out the same way)."""
    check_arguments(glue, locals(), "task.")
    text_columns, validation_split = GLUE_TASKS[name]
    check_hub_source(path, "task.path", LOCAL_DATA_HINT, repo_type="dataset")
    try:
        splits = datasets.load_dataset(path, name)
    except (ConnectionError, OSError) as error:
        raise RuntimeError(f"could not load GLUE '{name}' from '{path}' ({error}). {LOCAL_DATA_HINT}") from error
    label_names = splits["train"].features["label"].names
    return TextTask(
        name=f"glue_{name}",
        train=subsample(splits["train"], max_train_examples, split_seed),
        validation=subsample(splits[validation_split], max_eval_examples, split_seed),
        text_columns=text_columns,
        label_names=label_names,
        max_length=max_length,
        cache_dir=cache_dir,
    )
