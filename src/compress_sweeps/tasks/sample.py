"""Seeded samples of a task's encoded splits: the calibration examples of post-training methods.

`calibration_batches` is the one way calibration examples are drawn, so every post-training step of a run sees
the same examples for the same seed and count: the one-shot pruners (pruners/oneshot/) and the static int8 export
(export/onnx_static.py) both calibrate on training examples drawn here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from compress_sweeps.batching import loader


def calibration_indices(size: int, examples: int, seed: int) -> list[int]:
    """`examples` distinct row indices of a split of `size` rows (all rows when it has fewer), drawn by `seed`."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return order[: min(examples, size)].tolist()


def calibration_batches(
    dataset: Sequence, input_keys: Sequence[str], examples: int, batch_size: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """The calibration sample as model-input batches ({key: tensor} with the keys the model takes), on the CPU."""
    indices = calibration_indices(len(dataset), examples, seed)
    batches = loader(dataset, batch_size, sampler=indices)  # padded per batch, like every other batch
    return [{key: batch[key] for key in input_keys if key in batch} for batch in batches]
