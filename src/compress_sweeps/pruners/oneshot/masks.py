"""Which weights a one-shot method prunes, given its scores (lower = pruned first) and the sparsity pattern.

Scores are a `(out, in)` matrix (conv kernels flattened into the input columns, as in patterns.py):
- `N:M`: the M - N lowest of every run of M consecutive input weights of a row (exactly 1 - N/M of the layer).
- `NxM` blocks: a block's score is the sum of its elements' scores; the lowest `sparsity` of the blocks are pruned,
  either over the whole matrix (`per_row=False`: magnitude, SparseGPT's column blocks) or within every row of
  blocks (`per_row=True`: Wanda's per-output comparison group; for `1x1` simply every output row).
- `channel`: whole output rows by their summed score, over the whole matrix.
Ties are broken by position (stable sorts), so a selection is deterministic.
"""

from __future__ import annotations

import torch

from compress_sweeps.weights.patterns import BlockPattern, ChannelPattern, NMPattern, Pattern


def _lowest(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Booleans marking the round(fraction * n) lowest entries of each row of a 2-D `scores`."""
    count = round(fraction * scores.shape[1])
    order = scores.argsort(dim=1, stable=True)[:, :count]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, True)


def pruned_by_score(scores: torch.Tensor, pattern: Pattern, sparsity: float, per_row: bool = False) -> torch.Tensor:
    """The `(out, in)` booleans of the weights to prune (True = pruned) under `pattern` at `sparsity`."""
    out, inp = scores.shape
    scores = scores.float()
    if isinstance(pattern, NMPattern):
        runs = scores.reshape(out, inp // pattern.m, pattern.m).reshape(-1, pattern.m)
        return _lowest(runs, 1.0 - pattern.n / pattern.m).reshape(out, inp)
    if isinstance(pattern, ChannelPattern):
        if per_row:
            raise ValueError("the channel pattern has no per-row comparison group")
        rows = _lowest(scores.sum(dim=1).reshape(1, -1), sparsity).reshape(-1, 1)
        return rows.expand(out, inp).clone()
    if not isinstance(pattern, BlockPattern):
        raise TypeError(f"unknown pattern {pattern!r}")
    if pattern.rows == pattern.cols == 1:  # unstructured: every weight is its own group
        return _lowest(scores, sparsity) if per_row else _lowest(scores.reshape(1, -1), sparsity).reshape(out, inp)
    grid = scores.reshape(out // pattern.rows, pattern.rows, inp // pattern.cols, pattern.cols).sum(dim=(1, 3))
    chosen = _lowest(grid, sparsity) if per_row else _lowest(grid.reshape(1, -1), sparsity).reshape(grid.shape)
    return chosen.repeat_interleave(pattern.rows, 0).repeat_interleave(pattern.cols, 1)
