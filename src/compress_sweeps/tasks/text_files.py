"""Bring your own text data: local CSV / TSV / JSON(L) / Parquet files with text column(s) and a label column.

Everything about the files is checked before anything loads (`check_text_files`, run by the pre-launch pass and by
`text_files` itself): each file exists, is readable UTF-8 (or Parquet) and holds examples; the text and label
columns exist in both; there are at most two text columns (a sentence pair); the training file has at least two
labels, and every validation label occurs in training (else the validation split scores a class the model never
saw). Those two label checks are errors unless `label_check: warn`, which logs them instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import datasets
import pandas as pd
from pydantic import Field

from compress_sweeps.errors import ConfigError
from compress_sweeps.schema import check_arguments
from compress_sweeps.tasks.settings import Examples, MaxLength, Seed
from compress_sweeps.tasks.text import TextTask, subsample

log = logging.getLogger(__name__)

BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
TextColumns = Annotated[list[str], Field(min_length=1, max_length=2)]  # one text, or a sentence pair


def read_table(path: str, key: str) -> pd.DataFrame:
    """The file as a table, or a ConfigError naming `key` and what is wrong with the file."""
    file = Path(path).expanduser()
    suffix = file.suffix.lower()
    if suffix not in BUILDERS:
        raise ConfigError(key, path, f"must end in one of {' | '.join(BUILDERS)}", problem="is not a known format")
    if not file.is_file():
        raise ConfigError(
            key, path, "must be an existing file", problem="does not exist" if not file.exists() else "is a folder"
        )
    if file.stat().st_size == 0:
        raise ConfigError(key, path, "must hold a header and examples", problem="is empty")
    try:
        if suffix == ".parquet":
            table = pd.read_parquet(file)
        elif suffix in (".json", ".jsonl"):
            with file.open("rb") as handle:
                array = handle.read(256).lstrip()[:1] == b"["  # a JSON array, else one JSON object per line
            table = pd.read_json(file, lines=not array, encoding="utf-8")
        else:
            table = pd.read_csv(file, sep="\t" if suffix == ".tsv" else ",", encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            key, path, f"must be UTF-8 text ({error.reason} at byte {error.start})", "is not UTF-8"
        ) from None
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
        raise ConfigError(
            key, path, f"must be a readable {suffix[1:]} file ({reason})", problem="cannot be read"
        ) from None
    if table.empty:
        raise ConfigError(key, path, "must hold at least one example below its header", problem="has no examples")
    return table


def check_text_files(
    train_file: str,
    validation_file: str,
    text_columns: list[str] | None = None,
    label_column: str = "label",
    label_names: list[str] | None = None,
    label_check: str = "strict",
) -> list[str]:
    """Every check of the module docstring; returns the label names in the order the task will use."""
    tables = {"train_file": read_table(train_file, "task.train_file")}
    if Path(train_file).suffix.lower() != Path(validation_file).suffix.lower():
        raise ConfigError(
            "task.validation_file", validation_file, f"must have the format of task.train_file={train_file}", "differs"
        )
    tables["validation_file"] = read_table(validation_file, "task.validation_file")
    for column, key in [
        *((c, "task.text_columns") for c in text_columns or ["text"]),
        (label_column, "task.label_column"),
    ]:
        for name, table in tables.items():
            if column not in table.columns:
                value = list(text_columns or ["text"]) if key == "task.text_columns" else column
                raise ConfigError(
                    key, value, f"must name columns of task.{name}, which has {list(table.columns)}", "is not a column"
                )
    train = {str(v) for v in tables["train_file"][label_column]}
    validation = {str(v) for v in tables["validation_file"][label_column]}
    names = [str(n) for n in label_names] if label_names else sorted(train | validation)
    unknown = sorted((train | validation) - set(names))
    if unknown:
        raise ConfigError("task.label_names", names, f"must list every label in the files; missing {unknown}")
    problems = []
    if len(train) < 2:
        problems.append(
            ("task.train_file", train_file, "must hold at least two labels", f"has one label only ({sorted(train)})")
        )
    if unseen := sorted(validation - train):
        allowed = f"must hold only labels the training file has; {unseen} never occur in {train_file}"
        problems.append(("task.validation_file", validation_file, allowed, "has labels never seen in training"))
    for key, value, allowed, problem in problems:
        if label_check == "strict":
            raise ConfigError(key, value, f"{allowed} (task.label_check=warn accepts it)", problem=problem)
        log.warning("%s=%s %s: %s", key, value, problem, allowed)
    return names


def text_files(
    train_file: str,
    validation_file: str,
    text_columns: TextColumns | None = None,
    label_column: str = "label",
    label_names: list[str] | None = None,
    label_check: Literal["strict", "warn"] = "strict",
    max_length: MaxLength = 128,
    max_train_examples: Examples | None = None,
    max_eval_examples: Examples | None = None,
    split_seed: Seed = 0,
    cache_dir: str | None = None,
) -> TextTask:
    """Load two local files; labels may be strings or ints (`label_names` fixes their order, else sorted)."""
    check_arguments(text_files, locals(), "task.")
    names = check_text_files(train_file, validation_file, text_columns, label_column, label_names, label_check)
    paths = {"train": Path(train_file).expanduser(), "validation": Path(validation_file).expanduser()}
    suffix = paths["train"].suffix.lower()
    options = {"delimiter": "\t"} if suffix == ".tsv" else {}
    splits = datasets.load_dataset(BUILDERS[suffix], data_files={k: str(p) for k, p in paths.items()}, **options)
    to_id = {n: i for i, n in enumerate(names)}
    splits = splits.map(lambda row: {"label_id": to_id[str(row[label_column])]}).remove_columns(label_column)
    splits = splits.rename_column("label_id", "label").cast_column("label", datasets.ClassLabel(names=names))
    return TextTask(
        name=f"text_files_{paths['train'].stem}",
        train=subsample(splits["train"], max_train_examples, split_seed),
        validation=subsample(splits["validation"], max_eval_examples, split_seed),
        text_columns=list(text_columns or ["text"]),
        label_names=names,
        max_length=max_length,
        cache_dir=cache_dir,
    )
