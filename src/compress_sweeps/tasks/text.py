"""Text classification tasks: raw `datasets.Dataset` splits tokenized once and cached on disk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

LABEL = "labels"
INDEX = "idx"


@dataclass
class TextTask:
    """A text classification task: train/validation splits with text column(s) and an integer `label` column.

    `datasets(tokenizer)` tokenizes each split once per (split contents, tokenizer, max_length) and keeps the
    result in `cache_dir`, so every job of a sweep reuses it.
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

    def datasets(self, tokenizer: PreTrainedTokenizerBase | None) -> tuple[datasets.Dataset, datasets.Dataset]:
        """Tokenized train and validation splits in torch format, with `labels` and `idx` columns."""
        if tokenizer is None:
            raise ValueError(f"task '{self.name}' is a text task: choose a model with a tokenizer (minilm, hf)")
        return self._encode(self.train, "train", tokenizer), self._encode(self.validation, "validation", tokenizer)

    def _encode(self, split: datasets.Dataset, split_name: str, tokenizer: PreTrainedTokenizerBase):
        keep = [c for c in self.input_keys if c in tokenizer.model_input_names]

        def tokenize(batch: dict) -> dict:
            texts = [batch[c] for c in self.text_columns]
            encoded = tokenizer(*texts, truncation=True, max_length=self.max_length, padding="max_length")
            return {k: encoded[k] for k in keep}

        split = split.map(lambda _, i: {INDEX: i}, with_indices=True)
        cache_file = None
        if self.cache_dir:
            key = f"{split._fingerprint}|{tokenizer.name_or_path}|{len(tokenizer)}|{self.max_length}|{keep}"
            digest = hashlib.sha256(key.encode()).hexdigest()[:16]
            folder = Path(self.cache_dir).expanduser() / "tokenized" / self.name
            folder.mkdir(parents=True, exist_ok=True)
            cache_file = str(folder / f"{split_name}-{digest}.arrow")
        encoded = split.map(
            tokenize,
            batched=True,
            remove_columns=[c for c in split.column_names if c not in ("label", INDEX)],
            cache_file_name=cache_file,
            desc=f"tokenize {self.name}/{split_name}",
        )
        encoded = encoded.rename_column("label", LABEL)
        encoded.set_format("torch", columns=[*keep, LABEL, INDEX])
        return encoded


def subsample(split: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """The first `limit` rows of a seeded shuffle (all rows when `limit` is None)."""
    if limit is None or limit >= len(split):
        return split
    if limit < 1:
        raise ValueError(f"task.max_*_examples must be >= 1 or null, got {limit}")
    return split.shuffle(seed=seed).select(range(limit))
