"""Text classification tasks: raw `datasets.Dataset` splits tokenized once (unpadded) and cached on disk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from compress_sweeps.batching import PadCollator

LABEL = "labels"
INDEX = "idx"
LAYOUT = "unpadded"  # part of the cache key: files written when examples were padded to max_length are not reused


class TokenizedSplit(Dataset):
    """One tokenized split: unpadded rows (1-D token inputs of each example's own length, `labels`, `idx`), each
    example's length in tokens (`lengths`, for `trainer.group_by_length`) and `collate`, which pads a batch to its
    longest example (`compress_sweeps.batching.loader` uses it)."""

    def __init__(self, rows: datasets.Dataset, collate: PadCollator) -> None:
        self.rows, self.collate = rows, collate
        self.lengths: list[int] = pc.list_value_length(rows.with_format("arrow")["input_ids"]).to_pylist()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        return self.rows.__getitems__(indices)  # one Arrow read per batch, not one per example


@dataclass
class TextTask:
    """A text classification task: train/validation splits with text column(s) and an integer `label` column.

    `datasets(tokenizer)` tokenizes each split once per (split contents, tokenizer, max_length) and keeps the
    result in `cache_dir`, so every job of a sweep reuses it. Examples are stored unpadded and each batch is padded
    to its longest example (not rounded up to a multiple of 8: on CPU that only adds work, bench/text_throughput.py).
    """

    name: str
    train: datasets.Dataset
    validation: datasets.Dataset
    text_columns: list[str]
    label_names: list[str]
    max_length: int = 128
    cache_dir: str | None = None
    input_keys: tuple[str, ...] = field(default=("input_ids", "attention_mask", "token_type_ids"))

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ValueError(f"task.max_length must be >= 8, got {self.max_length}")
        missing = [c for c in [*self.text_columns, "label"] if c not in self.train.column_names]
        if missing:
            raise ValueError(f"task '{self.name}': columns {missing} not found; the data has {self.train.column_names}")

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def datasets(self, tokenizer: PreTrainedTokenizerBase | None) -> tuple[TokenizedSplit, TokenizedSplit]:
        """Tokenized train and validation splits: rows of torch tensors, with `labels` and `idx`."""
        if tokenizer is None:
            raise ValueError(f"task '{self.name}' is a text task: choose a model with a tokenizer (minilm, hf)")
        return self._encode(self.train, "train", tokenizer), self._encode(self.validation, "validation", tokenizer)

    def _encode(self, split: datasets.Dataset, split_name: str, tokenizer: PreTrainedTokenizerBase) -> TokenizedSplit:
        keep = [c for c in self.input_keys if c in tokenizer.model_input_names]

        def tokenize(batch: dict) -> dict:
            texts = [batch[c] for c in self.text_columns]
            encoded = tokenizer(*texts, truncation=True, max_length=self.max_length)  # padded per batch, by collate
            return {k: encoded[k] for k in keep}

        split = split.map(lambda _, i: {INDEX: i}, with_indices=True)
        key = f"{split._fingerprint}|{tokenizer.name_or_path}|{len(tokenizer)}|{self.max_length}|{keep}|{LAYOUT}"
        cache_file = tokenized_file(self.cache_dir, self.name, split_name, key)
        encoded = split.map(
            tokenize,
            batched=True,
            remove_columns=[c for c in split.column_names if c not in ("label", INDEX)],
            cache_file_name=cache_file,
            desc=f"tokenize {self.name}/{split_name}",
        )
        encoded = encoded.rename_column("label", LABEL)
        encoded.set_format("torch", columns=[*keep, LABEL, INDEX])
        return TokenizedSplit(encoded, PadCollator.for_tokenizer(tokenizer, keep))


def tokenized_file(cache_dir: str | None, task: str, split_name: str, key: str) -> str | None:
    """Where a tokenized split is kept: `<cache_dir>/tokenized/<task>/<split>-<digest of key>.arrow` (None: no
    cache); `key` names everything the tokenized rows depend on."""
    if not cache_dir:
        return None
    folder = Path(cache_dir).expanduser() / "tokenized" / task
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"{split_name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.arrow")


def subsample(split: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """The first `limit` rows of a seeded shuffle (all rows when `limit` is None)."""
    if limit is None or limit >= len(split):
        return split
    if limit < 1:
        raise ValueError(f"task.max_*_examples must be >= 1 or null, got {limit}")
    return split.shuffle(seed=seed).select(range(limit))
