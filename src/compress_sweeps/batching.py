"""Batches of examples of unequal length: padded per batch, not per dataset, and optionally grouped by length.

Text tasks keep their tokenized examples unpadded (`tasks.text.TokenizedSplit`) and say how to batch them: its
`collate` pads each batch to its longest example. Short texts then cost their own length, not `max_length`, in every
forward and backward pass. Every DataLoader of the package comes from `loader(...)`, so the training loop, evaluation,
the teacher-output cache, probes and the int8 export all batch a dataset the same way.

`trainer.group_by_length` orders each epoch like the Hugging Face Trainer's length-grouped sampler: a seeded
permutation cut into megabatches of (up to) 50 batches, each sorted by length, so a batch holds examples of similar
length and pads little. The order is drawn from the trainer's data generator alone, so a resumed run replays it
exactly, and every rank of a distributed run draws the same order and takes its own share of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from compress_sweeps import distributed
from compress_sweeps.errors import ConfigError

MEGABATCH = 50  # batches per length-sorted megabatch (at most; fewer on small data), as in the Hugging Face Trainer
PAD_SIDES = ("right", "left")


@runtime_checkable
class Collated(Protocol):
    """A dataset whose rows need their own collate function (unpadded token ids); others use torch's default."""

    def collate(self, rows: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class Lengths(Protocol):
    """A dataset that knows each example's length in tokens (what `trainer.group_by_length` sorts by)."""

    lengths: Sequence[int]


def loader(
    dataset: Dataset,
    batch_size: int,
    sampler: Sampler[int] | None = None,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader over `dataset` in order (or `sampler`'s order), batched the way the dataset says."""
    collate = dataset.collate if isinstance(dataset, Collated) else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator, collate_fn=collate)


def first_batch(
    dataset: Dataset, input_keys: Sequence[str], size: int, device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """The first `size` examples of `dataset` as model inputs (on `device`), padded to the longest of them (text):
    what latency figures are timed on."""
    batch = next(iter(loader(dataset, size)))
    return {k: batch[k].to(device) if device is not None else batch[k] for k in input_keys if k in batch}


class PadCollator:
    """Stack rows into one batch, padding the token inputs (1-D, of unequal lengths) to the batch's longest row.

    Pads as the tokenizer does (`tokenizer.pad`, `transformers.DataCollatorWithPadding`): each key of `pad_values`
    with its value (`input_ids` with the pad token, masks with 0) on `side`, the width rounded up to a multiple of
    `multiple_of`. `width` pads every batch to that many tokens instead (`padding="max_length"`, how text tasks were
    batched before). Other keys (labels, idx) are stacked. Unlike `DataCollatorWithPadding` it never converts the
    tensors to Python lists: 8x less time per batch of 16.
    """

    def __init__(
        self,
        pad_values: Mapping[str, int],
        side: str = "right",
        multiple_of: int | None = None,
        width: int | None = None,
    ) -> None:
        if side not in PAD_SIDES:
            raise ValueError(f"padding side must be one of {list(PAD_SIDES)}, got '{side}'")
        if multiple_of is not None and multiple_of < 1:
            raise ValueError(f"multiple_of must be an integer >= 1 or None, got {multiple_of}")
        self.pad_values, self.side, self.multiple_of, self.width = dict(pad_values), side, multiple_of, width

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, keys: Sequence[str], **options: Any) -> PadCollator:
        """Pad values and side of `tokenizer` for the token inputs `keys` (`options`: `multiple_of`, `width`)."""
        if tokenizer.pad_token_id is None:
            raise ValueError(f"tokenizer '{tokenizer.name_or_path}' has no pad token: batches cannot be padded")
        values = {"input_ids": tokenizer.pad_token_id, "token_type_ids": tokenizer.pad_token_type_id}
        return cls({key: values.get(key, 0) for key in keys}, tokenizer.padding_side, **options)

    def __call__(self, rows: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        padded = [key for key in rows[0] if key in self.pad_values]
        longest = max((len(row[key]) for row in rows for key in padded), default=0)
        width = self.width or longest
        if self.multiple_of:
            width = -(-width // self.multiple_of) * self.multiple_of
        if longest > width:
            raise ValueError(f"an example of {longest} tokens does not fit a batch padded to {width}")
        batch = {}
        for key in rows[0]:
            if key not in self.pad_values:
                batch[key] = torch.stack([row[key] for row in rows])
                continue
            out = rows[0][key].new_full((len(rows), width), self.pad_values[key])
            for i, row in enumerate(rows):
                values = row[key]
                if self.side == "right":
                    out[i, : len(values)] = values
                else:
                    out[i, width - len(values) :] = values
            batch[key] = out
        return batch


def length_grouped_order(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[int]:
    """A permutation of the examples in which every `batch_size` consecutive ones have similar lengths.

    The Hugging Face Trainer's `get_length_grouped_indices`, step for step (the same order from the same generator
    state): a random permutation, cut into megabatches of `MEGABATCH` batches (fewer, down to 1, when the data holds
    under 4 megabatches), each sorted by length, longest first; the longest example of all is swapped to the front,
    so that a batch too large for memory fails at the first step.
    """
    per_megabatch = max(1, min(len(lengths) // (batch_size * 4), MEGABATCH))
    size = per_megabatch * batch_size
    order = torch.randperm(len(lengths), generator=generator).tolist()
    groups = [sorted(order[i : i + size], key=lengths.__getitem__, reverse=True) for i in range(0, len(order), size)]
    longest = max(range(len(groups)), key=lambda g: lengths[groups[g][0]])
    groups[0][0], groups[longest][0] = groups[longest][0], groups[0][0]
    return [i for group in groups for i in group]


class LengthGroupedSampler(Sampler[int]):
    """Rank r's share (every world-th index from r) of one `length_grouped_order` that all ranks draw alike.

    The order is grouped for the global batch (`batch_size` x `world`), so the ranks' batches of one step hold
    examples of similar lengths too, and no rank waits long for another.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, generator: torch.Generator, rank: int = 0, world: int = 1
    ) -> None:
        self.lengths, self.batch_size, self.generator = list(lengths), batch_size, generator
        self.rank, self.world = rank, world

    def __iter__(self):
        order = length_grouped_order(self.lengths, self.batch_size * self.world, self.generator)
        yield from order[self.rank :: self.world]

    def __len__(self) -> int:
        return len(range(self.rank, len(self.lengths), self.world))


def length_grouped(dataset: Dataset, batch_size: int, generator: torch.Generator) -> LengthGroupedSampler:
    """The training sampler of one epoch under `trainer.group_by_length` (this process's share if distributed)."""
    if not isinstance(dataset, Lengths):
        raise ConfigError(
            "trainer.group_by_length",
            True,
            "must be false for this task",
            problem="needs examples of varying length (tokenized text); this task's examples all have one size",
        )
    rank, world = (distributed.rank(), distributed.world_size()) if distributed.active() else (0, 1)
    return LengthGroupedSampler(dataset.lengths, batch_size, generator, rank, world)


def sequence_length(inputs: Mapping[str, torch.Tensor]) -> int | None:
    """Tokens per example of a text batch (its padded width), None for inputs without token ids (images)."""
    ids = inputs.get("input_ids")
    return None if ids is None else int(ids.shape[-1])


def dataset_digest(dataset: Dataset, keys: Sequence[str], batch_size: int = 1024) -> str:
    """sha256 over the tensors of `keys` (plus `idx`) of every row, in order: each row's values and length, so
    unpadded rows of different lengths are told apart however they would be batched. The identity of an encoded
    split (token ids carry the dataset, tokenizer and max length), part of the key of what is cached per training
    data: a fine-tuned model (models/finetuned.py), a teacher's outputs (distillers/cache.py)."""
    digest = hashlib.sha256(f"{len(dataset)}|{sorted(keys)}".encode())
    for rows in DataLoader(dataset, batch_size=batch_size, collate_fn=list):
        for key in sorted({*keys, "idx"} & set(rows[0])):
            values = [row[key].reshape(-1) for row in rows]
            digest.update(torch.tensor([len(v) for v in values]).numpy().tobytes())
            digest.update(torch.cat(values).contiguous().numpy().tobytes())
    return digest.hexdigest()
