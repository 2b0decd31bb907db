"""Bring your own text data: local CSV / JSON(L) / Parquet files with text column(s) and a label column."""

from __future__ import annotations

from pathlib import Path

import datasets

from compress_sweeps.tasks.text import TextTask, subsample

BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def text_files(
    train_file: str,
    validation_file: str,
    text_columns: list[str] | None = None,
    label_column: str = "label",
    label_names: list[str] | None = None,
    max_length: int = 128,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    split_seed: int = 0,
    cache_dir: str | None = None,
) -> TextTask:
    """Load two local files; labels may be strings or ints (`label_names` fixes their order, else sorted)."""
    paths = {"train": Path(train_file).expanduser(), "validation": Path(validation_file).expanduser()}
    for key, file in paths.items():
        if not file.is_file():
            raise FileNotFoundError(f"task.{key}_file: no such file '{file}'")
    suffixes = {p.suffix.lower() for p in paths.values()}
    if len(suffixes) != 1 or next(iter(suffixes)) not in BUILDERS:
        raise ValueError(f"task.train_file/validation_file must share one suffix of {sorted(BUILDERS)}")
    suffix = next(iter(suffixes))
    options = {"delimiter": "\t"} if suffix == ".tsv" else {}
    splits = datasets.load_dataset(BUILDERS[suffix], data_files={k: str(p) for k, p in paths.items()}, **options)
    text_columns = list(text_columns or ["text"])
    for column in [*text_columns, label_column]:
        if column not in splits["train"].column_names:
            raise ValueError(f"column '{column}' not in {paths['train']}; it has {splits['train'].column_names}")
    seen = sorted({str(v) for s in splits.values() for v in s[label_column]})
    names = [str(n) for n in label_names] if label_names else seen
    unknown = sorted(set(seen) - set(names))
    if unknown:
        raise ValueError(f"task.label_names {names} lacks labels found in the data: {unknown}")
    to_id = {n: i for i, n in enumerate(names)}
    splits = splits.map(lambda row: {"label_id": to_id[str(row[label_column])]}).remove_columns(label_column)
    splits = splits.rename_column("label_id", "label").cast_column("label", datasets.ClassLabel(names=names))
    return TextTask(
        name=f"text_files_{paths['train'].stem}",
        train=subsample(splits["train"], max_train_examples, split_seed),
        validation=subsample(splits["validation"], max_eval_examples, split_seed),
        text_columns=text_columns,
        label_names=names,
        max_length=max_length,
        cache_dir=cache_dir,
    )
