"""Logit distillation (Hinton et al.): loss = alpha_student * L_task + alpha_kd * sum_i w_i * KD_i.

KD_i = T^2 * KL(softmax(t_i/T) || softmax(s/T)) for each teacher i (or the MSE between logits, `kd_loss=mse`).
Several teachers are combined by their weights, summed or averaged (`combine`). The distiller only adds its term
in `loss(...)`; the trainer keeps the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress_sweeps.distillers.losses import kd_kl
from compress_sweeps.distillers.outputs import TeacherOutputs, check_trains, per_teacher
from compress_sweeps.distillers.teacher import Teacher
from compress_sweeps.distillers.tracker import MeanTracker
from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext, logits_of
from compress_sweeps.spec import CompressionSpec

KD_LOSSES = ("kl", "mse")
COMBINE = ("sum", "mean")


def combine_terms(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float], how: str) -> torch.Tensor:
    """sum_i w_i * term_i, divided by sum_i w_i when `how == "mean"`."""
    total = sum(weights[name] * term for name, term in terms.items())
    if how == "mean":
        total = total / max(sum(weights[name] for name in terms), 1e-12)
    return total


class LogitsDistiller:
    """Soft-target distillation from one or more frozen teachers (`distiller=logits`)."""

    def __init__(
        self,
        teachers: Mapping[str, Teacher],
        temperature: float = 2.0,
        alpha_kd: float = 0.5,
        alpha_student: float = 0.5,
        kd_loss: str = "kl",
        combine: str = "sum",
        cache_teacher: bool = False,
        cache_max_mb: float = 2000.0,
        cache_batch_size: int = 64,
    ) -> None:
        if temperature <= 0:
            raise ConfigError("distiller.temperature", temperature, "must be > 0")
        if alpha_kd < 0 or alpha_student < 0 or alpha_kd + alpha_student == 0:
            raise ConfigError(
                "distiller.alpha_kd", alpha_kd, f"must be >= 0, and > 0 when distiller.alpha_student={alpha_student}"
            )
        weights = {name: teacher.weight for name, teacher in teachers.items()}
        if alpha_kd == 0 or (weights and not any(weights.values())):  # the KD term is 0: a run without distillation
            key, value = (
                ("distiller.alpha_kd", 0) if alpha_kd == 0 else (f"distiller.teachers.{next(iter(weights))}.weight", 0)
            )
            raise ConfigError(
                key,
                value,
                "must be > 0: the KD term is multiplied by it (distiller=none runs without one)",
                "distils nothing",
            )
        if kd_loss not in KD_LOSSES:
            raise ConfigError("distiller.kd_loss", kd_loss, f"must be one of {list(KD_LOSSES)}", problem="is unknown")
        if combine not in COMBINE:
            raise ConfigError("distiller.combine", combine, f"must be one of {list(COMBINE)}", problem="is unknown")
        for name, teacher in teachers.items():
            teacher.key = f"distiller.teachers.{name}"
        self.temperature, self.alpha_kd, self.alpha_student = temperature, alpha_kd, alpha_student
        self.kd_loss, self.combine = kd_loss, combine
        self.teachers = TeacherOutputs(teachers, cache_teacher, cache_max_mb, cache_batch_size)
        self.weights = {name: teacher.weight for name, teacher in self.teachers.teachers.items()}
        self.tracker = MeanTracker()

    def attach(self, model: nn.Module, context: RunContext) -> None:
        self.teachers.attach(context, lambda teacher, inputs: {"logits": logits_of(teacher(inputs))}, tag="logits")

    def kd_term(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """One teacher's KD term for a batch of logits."""
        if self.kd_loss == "mse":
            return F.mse_loss(student_logits, teacher_logits)
        return kd_kl(student_logits, teacher_logits, self.temperature)

    def teacher_confidence(self, teacher_logits: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mean peak probability of each teacher's soft targets softmax(t/T) on this batch.

        Near 1 the soft targets are nearly the hard labels (a teacher that memorised its training data), and KD
        adds little beyond the labels; `kd/teacher_confidence` (`_<name>` per teacher when there are several).
        """
        peaks = {
            name: torch.softmax(t.float() / self.temperature, -1).amax(-1).mean() for name, t in teacher_logits.items()
        }
        return per_teacher("kd/teacher_confidence", peaks)

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        student = logits_of(outputs)
        teacher_logits = {name: out["logits"] for name, out in self.teachers(batch).items()}
        terms = {name: self.kd_term(student, logits) for name, logits in teacher_logits.items()}
        kd = combine_terms(terms, self.weights, self.combine)
        self.tracker.add(
            {
                "kd/task_loss": loss,
                "kd/loss": kd,
                **{f"kd/loss_{n}": t for n, t in terms.items()},
                **self.teacher_confidence(teacher_logits),
            }
        )
        return self.alpha_student * loss + self.alpha_kd * kd

    def before_optimizer_step(self, step: int) -> None:
        pass

    def after_optimizer_step(self, step: int) -> None:
        pass

    def finalize(self, model: nn.Module) -> nn.Module:
        self.teachers.release()
        return model

    def state_dict(self) -> dict[str, Any]:
        """Logged running means and teacher pass counts (for checkpoints; the teachers are rebuilt at attach)."""
        return {"tracker": self.tracker.state_dict(), "teachers": self.teachers.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.teachers.load_state_dict(state["teachers"])

    def spec(self) -> CompressionSpec:
        """No promise about the weights; with the teacher-output cache it reads each batch's `idx`."""
        return CompressionSpec(method="LogitsDistiller", batch_keys=self.teachers.batch_keys)

    def check(self, total_steps: int, how: str = "") -> None:
        check_trains(total_steps, how)

    def metrics(self) -> dict[str, float]:
        return self.tracker.kd_metrics(self.temperature, self.teachers.forward_passes) | self.teachers.metrics()
