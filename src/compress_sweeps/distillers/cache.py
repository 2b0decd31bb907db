"""Teacher outputs computed once per (teacher weights, training data) and reused by every job of a sweep.

The key hashes the teacher's weights and the encoded training split itself (token ids already carry the dataset,
tokenizer and max length), so a changed teacher or tokenization can never hit a stale entry. Outputs are stored
in float32 exactly as the live teacher returns them, in rows indexed by the example `idx` of each batch.

Batches are padded to their longest example, so a token-level output (hidden states [B, T, H], attention maps
[B, heads, T, T]) comes in a different width T from every batch. Its table is as wide as the longest example of the
split; each row holds the example's real tokens first (batches are padded on the right) and zeros at padding, and
a lookup cuts (or zero-pads) the table's token axes to the width of the batch asking. On the real tokens of every
example a cached row thus equals the live teacher's output for any batch; padding positions, which every loss
masks out, hold zeros.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from compress_sweeps import batching, distributed

Outputs = dict[str, torch.Tensor]
log = logging.getLogger(__name__)
TokenAxes = Mapping[str, Sequence[int]]  # {output name -> its token axes}, e.g. {"m0": (1,)} for [B, T, H]


def _fit_axes(value: torch.Tensor, axes: Sequence[int], width: int) -> torch.Tensor:
    """`value` with each token axis in `axes` cut to `width`, or zero-padded on the right up to it."""
    for axis in axes:
        if value.shape[axis] >= width:
            value = value.narrow(axis, 0, width)
        else:
            pad = [0, 0] * (value.ndim - 1 - axis) + [0, width - value.shape[axis]]  # F.pad counts from the last axis
            value = F.pad(value, pad)
    return value


def _zero_padding(value: torch.Tensor, axes: Sequence[int], mask: torch.Tensor) -> torch.Tensor:
    """`value` [B, ...] with zeros wherever a token axis in `axes` is at a padding position of `mask` [B, T]."""
    for axis in axes:
        shape = [len(mask)] + [1] * (value.ndim - 1)
        shape[axis] = mask.shape[1]
        value = value * mask.reshape(shape).to(value.dtype)
    return value


class TeacherOutputCache:
    """Rows of teacher outputs {name -> tensor[N, ...]} for a training split, held in memory and on disk.

    `token_axes` names the outputs that have token axes (see the module docstring); other outputs (logits) are
    one fixed-size row per example.
    """

    def __init__(self, outputs: Outputs, token_axes: TokenAxes | None = None) -> None:
        self.outputs, self.token_axes = outputs, dict(token_axes or {})

    def lookup(self, idx: torch.Tensor, device: torch.device, width: int | None = None) -> Outputs:
        """The teacher outputs of the examples `idx` of a batch padded to `width` tokens, on `device`."""
        rows = idx.cpu()
        answers = {}
        for name, table in self.outputs.items():
            value = table[rows]
            if name in self.token_axes and width is not None:
                value = _fit_axes(value, self.token_axes[name], width)
            answers[name] = value.to(device)
        return answers

    @classmethod
    def load_or_compute(
        cls,
        folder: str | Path,
        key: str,
        dataset: Dataset,
        compute: Callable[[Mapping[str, torch.Tensor]], Outputs],
        batch_size: int = 64,
        max_bytes: float = 2e9,
        token_axes: TokenAxes | None = None,
    ) -> TeacherOutputCache | None:
        """Load `<folder>/<key>.safetensors`, or run `compute` over `dataset` once and save it there.

        Returns None (with a warning) when the outputs would take more than `max_bytes`: the caller then runs
        the teacher live, which costs time but not memory. In a distributed run every rank computes the outputs
        (no rank waits on another) and only rank 0 saves them.
        """
        token_axes = dict(token_axes or {})
        path = Path(folder).expanduser() / f"{key}.safetensors"
        if path.is_file():
            return cls(load_file(str(path)), token_axes)
        batches = batching.loader(dataset, batch_size)
        # the widest batch of the split: how wide a table with token axes must be
        width = max(len(batch["attention_mask"][0]) for batch in batches) if token_axes else 0
        tables: Outputs = {}
        for batch in batches:
            outputs = {name: value.detach().float().cpu() for name, value in compute(batch).items()}
            if token_axes:
                outputs = _token_rows(outputs, token_axes, batch["attention_mask"].cpu(), width)
            if not tables:
                per_row = sum(v[0].numel() * 4 for v in outputs.values())
                if per_row * len(dataset) > max_bytes:
                    log.warning(
                        f"teacher outputs would take {per_row * len(dataset) / 1e6:.0f} MB > "
                        f"distiller.cache_max_mb={max_bytes / 1e6:.0f}; running the teacher live instead",
                    )
                    return None
                tables = {n: torch.zeros((len(dataset), *v.shape[1:]), dtype=v.dtype) for n, v in outputs.items()}
            for name, value in outputs.items():
                tables[name][batch["idx"]] = value
        if distributed.is_main():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            save_file(tables, str(tmp))
            os.replace(tmp, path)  # parallel jobs of a sweep never read a half-written file
        return cls(tables, token_axes)


def _token_rows(outputs: Outputs, token_axes: TokenAxes, mask: torch.Tensor, width: int) -> Outputs:
    """A batch's outputs as table rows: token axes zero at padding and `width` wide (real tokens first)."""
    if not bool((mask.cummin(dim=1).values == mask).all()):
        raise ValueError(
            "cached teacher features with token axes need batches padded on the right (real tokens first); this "
            "tokenizer pads on the left: set distiller.cache_teacher=false"
        )
    for name, axes in token_axes.items():
        outputs[name] = _fit_axes(_zero_padding(outputs[name], axes, mask), axes, width)
    return outputs
