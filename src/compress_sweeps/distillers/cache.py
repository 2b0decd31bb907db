"""Teacher outputs computed once per (teacher weights, training data) and reused by every job of a sweep.

The key hashes the teacher's weights and the encoded training split itself (token ids already carry the dataset,
tokenizer and max length), so a changed teacher or tokenization can never hit a stale entry. Outputs are stored
in float32 exactly as the live teacher returns them, in rows indexed by the example `idx` of each batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from compress_sweeps import distributed

Outputs = dict[str, torch.Tensor]
log = logging.getLogger(__name__)


def dataset_digest(dataset: Dataset, keys: Sequence[str], batch_size: int = 1024) -> str:
    """sha256 over the tensors of `keys` (plus `idx`) of every row, in order."""
    digest = hashlib.sha256(f"{len(dataset)}|{sorted(keys)}".encode())
    for batch in DataLoader(dataset, batch_size=batch_size):
        for key in sorted({*keys, "idx"} & set(batch)):
            digest.update(batch[key].contiguous().numpy().tobytes())
    return digest.hexdigest()


class TeacherOutputCache:
    """Rows of teacher outputs {name -> tensor[N, ...]} for a training split, held in memory and on disk."""

    def __init__(self, outputs: Outputs) -> None:
        self.outputs = outputs

    def lookup(self, idx: torch.Tensor, device: torch.device) -> Outputs:
        """The teacher outputs of the examples `idx` of a batch, on `device`."""
        rows = idx.cpu()
        return {name: table[rows].to(device) for name, table in self.outputs.items()}

    @classmethod
    def load_or_compute(
        cls,
        folder: str | Path,
        key: str,
        dataset: Dataset,
        compute: Callable[[Mapping[str, torch.Tensor]], Outputs],
        batch_size: int = 64,
        max_bytes: float = 2e9,
    ) -> TeacherOutputCache | None:
        """Load `<folder>/<key>.safetensors`, or run `compute` over `dataset` once and save it there.

        Returns None (with a warning) when the outputs would take more than `max_bytes`: the caller then runs
        the teacher live, which costs time but not memory. In a distributed run every rank computes the outputs
        (no rank waits on another) and only rank 0 saves them.
        """
        path = Path(folder).expanduser() / f"{key}.safetensors"
        if path.is_file():
            return cls(load_file(str(path)))
        tables: Outputs = {}
        for batch in DataLoader(dataset, batch_size=batch_size):
            outputs = {name: value.detach().float().cpu() for name, value in compute(batch).items()}
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
        return cls(tables)
