"""Small models and data for the one-shot pruning tests (test_oneshot.py, test_oneshot_calibration.py)."""

from __future__ import annotations

import torch
from torch import nn


class Rows(torch.utils.data.Dataset):
    """Rows as the tasks give them: dicts of tensors with `idx` and `labels`."""

    def __init__(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.x, self.mask = x, mask

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = {"x": self.x[i], "labels": torch.tensor(0), "idx": torch.tensor(i)}
        return row | ({} if self.mask is None else {"attention_mask": self.mask[i]})


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x)) + x


class Chain(nn.Module):
    """Transformer-like: a ModuleList of blocks, each called on the previous block's output."""

    def __init__(self, width: int = 16, depth: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Plain(nn.Module):
    """Not a chain of blocks (an activation between the layers): the whole model is the stage."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


def correlated(n: int, width: int, seed: int = 0) -> torch.Tensor:
    """Inputs with unequal, correlated features (as real activations have), where reconstruction matters."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(width, width, generator=g) * torch.linspace(0.1, 3.0, width)
    return torch.randn(n, width, generator=g) @ mixing


class ModelOnX(nn.Module):
    """`model(x=...)`, the call convention of the tasks' batches."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x)


class Recorded:
    """A statistic that keeps every row it is given (for tests only)."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []

    def add(self, rows: torch.Tensor) -> None:
        self.rows.append(rows.clone())
