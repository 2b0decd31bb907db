"""Bring your own text data: local CSV / TSV / JSON(L) / Parquet files with text column(s) and a label column.

Everything about the files is checked before anything loads (`check_text_files`, run by the pre-launch pass and by
`text_files` itself): each file exists, is readable UTF-8 (or Parquet) and holds examples; the text and label
columns exist in both; there are at most two text columns (a sentence pair); every example has its text(s) and its
label, and no row repeats the header line (the file, the column and the first bad row are named); the training file
has at least two labels, and every validation label occurs in training (else the validation split scores a class
the model never saw). Those two label checks are errors unless `label_check: warn`, which makes them warnings; a
validation file that is the training file is a warning too. The run logs its warnings and records them in
results.json (`warnings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import datasets
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from pydantic import Field

from compress_sweeps.errors import ConfigError
from compress_sweeps.kinds import Kind, builds
from compress_sweeps.schema import check_arguments
from compress_sweeps.tasks.settings import Examples, MaxLength, Seed
from compress_sweeps.tasks.text import TextTask, subsample

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
) -> tuple[list[str], list[str]]:
    """Every check of the module docstring; returns the label names in the order the task will use, and the
    warnings (label problems with `label_check: warn`, a validation file that is the training file) for the run to
    log and record."""
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
    columns = list(dict.fromkeys([*(text_columns or ["text"]), label_column]))  # each once
    for name, table in tables.items():
        check_rows(table, columns, f"task.{name}", train_file if name == "train_file" else validation_file)
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
    warnings = []
    for key, value, allowed, problem in problems:
        if label_check == "strict":
            raise ConfigError(key, value, f"{allowed} (task.label_check=warn accepts it)", problem=problem)
        warnings.append(f"{key}={value} {problem}: {allowed}")
    if same_examples(train_file, validation_file, tables["train_file"], tables["validation_file"]):
        warnings.append(
            f"task.validation_file={validation_file} is the training file ({train_file}): the validation scores "
            "measure how well the model fits its own training examples, not how it does on new ones"
        )
    return names, warnings


def check_rows(table: pd.DataFrame, columns: list[str], key: str, path: str) -> None:
    """Every example has its text(s) and its label (an empty cell, or one pandas reads as missing: NA, null, nan),
    and no row repeats the header line (two CSV files joined with both headers); names the column and the first
    bad row."""
    used = table[columns]
    empty = used.isna() | used.apply(lambda column: column.astype(str).str.strip() == "")
    for column in columns:
        if empty[column].any():
            rows = empty.index[empty[column]]
            raise ConfigError(
                key,
                path,
                f"must have a value in every cell of column '{column}': {len(rows)} rows have none, the first is "
                f"{_where(path, rows[0])}",
                problem=f"has empty '{column}' cells",
            )
    repeats = (used.astype(str) == pd.Series(columns, index=columns)).all(axis=1)
    if repeats.any():
        rows = repeats.index[repeats]
        raise ConfigError(
            key,
            path,
            f"must hold its header line once, at the top: {len(rows)} rows repeat it, the first is "
            f"{_where(path, rows[0])}",
            problem="repeats its header line",
        )


def _where(path: str, index: int) -> str:
    """Example `index` (from 0) as the user finds it: its line in a CSV / TSV (below the header) or JSON Lines
    file, its row elsewhere."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return f"row {index + 1} (line {index + 2} of the file)"
    return f"row {index + 1}" + (f" (line {index + 1} of the file)" if suffix == ".jsonl" else "")


def same_examples(train_file: str, validation_file: str, train: pd.DataFrame, validation: pd.DataFrame) -> bool:
    """Whether the validation file is the training file: the same file, or the same examples in another file."""
    if Path(train_file).expanduser().resolve() == Path(validation_file).expanduser().resolve():
        return True
    return train.shape == validation.shape and train.reset_index(drop=True).equals(validation.reset_index(drop=True))


def precheck(task: DictConfig, prefix: str) -> list[str]:
    """Read the files' columns, cells and labels before anything loads; returns the warnings (settings that run,
    but probably not as meant) for the run to log and record."""
    values = OmegaConf.to_container(task, resolve=True)
    keys = ("train_file", "validation_file", "text_columns", "label_column", "label_names", "label_check")
    return check_text_files(**{k: values[k] for k in keys if k in values})[1]


@builds("task", Kind("text"), precheck=precheck)
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
    # the warnings are the pre-launch pass's to log and record (precheck above), once per run
    names, _ = check_text_files(train_file, validation_file, text_columns, label_column, label_names, label_check)
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
