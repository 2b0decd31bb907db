"""Running means of loss terms between two `metrics()` calls (the trainer logs every `log_every` steps)."""

from __future__ import annotations

from collections.abc import Mapping

import torch


class MeanTracker:
    """Sums detached scalars; `means()` returns the means since the last call (or the last means if none came)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def add(self, values: Mapping[str, torch.Tensor | float]) -> None:
        for name, value in values.items():
            value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def kd_metrics(self, temperature: float, teacher_forward_passes: int) -> dict[str, float]:
        """What every distiller logs: the loss-term means, the temperature, and how often teachers really ran."""
        return self.means() | {
            "kd/temperature": temperature,
            "kd/teacher_forward_passes": float(teacher_forward_passes),
        }

    def state_dict(self) -> dict[str, dict]:
        return {"sums": dict(self.sums), "counts": dict(self.counts), "last": dict(self.last)}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        self.sums, self.counts, self.last = dict(state["sums"]), dict(state["counts"]), dict(state["last"])

    def means(self) -> dict[str, float]:
        if self.sums:
            self.last = {name: total / self.counts[name] for name, total in self.sums.items()}
            self.sums, self.counts = {}, {}
        return dict(self.last)
