"""Multi-layer distillation (TinyBERT / TextBrewer style): match teacher and student features layer by layer.

Each match is `{teacher_layer, student_layer, feature: hidden|attention|embedding|logits, loss: mse|cosine|kl|ce,
weight}`; loss = alpha_student * L_task + sum_m weight_m * loss_m. Features are read with forward hooks, so the
trainer still calls `model(**inputs)`. When a student feature is narrower than the teacher's, a learned linear
projection (registered on the student during training, removed in `finalize`) maps it up first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compress_sweeps import batching
from compress_sweeps.distillers import losses
from compress_sweeps.distillers.features import FEATURES, FeatureTap, module_name, use_eager_attention
from compress_sweeps.distillers.outputs import TeacherOutputs, check_trains
from compress_sweeps.distillers.teacher import Teacher
from compress_sweeps.distillers.tracker import MeanTracker
from compress_sweeps.errors import ConfigError, show
from compress_sweeps.hooks import RunContext, logits_of
from compress_sweeps.spec import CompressionSpec

LOSSES = {
    "hidden": ("mse", "cosine"),
    "embedding": ("mse", "cosine"),
    "attention": ("mse", "kl", "cosine"),
    "logits": ("kl", "ce", "mse"),
}
PROJECTIONS = "kd_projections"  # the student's submodule holding the projections while training
# the token axes of each feature of a text model: a cached teacher feature is fitted to each batch's width along them
TOKEN_AXES = {"hidden": (1,), "embedding": (1,), "attention": (2, 3)}


@dataclass(frozen=True)
class LayerMatch:
    """One teacher feature the student should reproduce, and how strongly."""

    teacher_layer: int | str | None = None
    student_layer: int | str | None = None
    feature: str = "hidden"
    loss: str = "mse"
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ConfigError(
                "distiller.matches[].feature", self.feature, f"must be one of {list(FEATURES)}", "is unknown"
            )
        if self.loss not in LOSSES[self.feature]:
            allowed = f"must be one of {list(LOSSES[self.feature])} for feature {self.feature}"
            raise ConfigError("distiller.matches[].loss", self.loss, allowed, problem="is unknown")
        if self.weight < 0:
            raise ConfigError("distiller.matches[].weight", self.weight, "must be >= 0")


def _project(projection: nn.Linear, feature: torch.Tensor) -> torch.Tensor:
    """Apply a width projection to [B, T, H] (last dim) or to conv maps [B, C, H, W] (channel dim)."""
    if feature.ndim == 4:
        return projection(feature.movedim(1, -1)).movedim(-1, 1)
    return projection(feature)


class MultiLayerDistiller:
    """Layer-to-layer feature matching against one frozen teacher (`distiller=multilayer`)."""

    def __init__(
        self,
        teacher: Teacher,
        matches: Sequence[Mapping[str, Any]],
        alpha_student: float = 1.0,
        temperature: float = 1.0,
        projection: bool = True,
        cache_teacher: bool = False,
        cache_max_mb: float = 2000.0,
        cache_batch_size: int = 64,
    ) -> None:
        if not matches:
            raise ConfigError("distiller.matches", [], "must list at least one {teacher_layer, student_layer, ...}")
        if alpha_student < 0:
            raise ConfigError("distiller.alpha_student", alpha_student, "must be >= 0")
        if temperature <= 0:
            raise ConfigError("distiller.temperature", temperature, "must be > 0")
        self.matches = []
        for i, match in enumerate(matches):
            try:
                self.matches.append(match if isinstance(match, LayerMatch) else LayerMatch(**match))
            except ConfigError as error:
                raise ConfigError(
                    error.key.replace("[]", f"[{i}]"), error.value, error.allowed, error.problem
                ) from None
        if not any(match.weight for match in self.matches):  # every feature term is 0: a run without distillation
            raise ConfigError(
                "distiller.matches[0].weight",
                0,
                "must be > 0 for at least one match: the terms are multiplied by it (distiller=none runs without one)",
                problem="distils nothing",
            )
        teacher.key = "distiller.teacher"
        self.alpha_student, self.temperature, self.projection = alpha_student, temperature, projection
        self.teachers = TeacherOutputs({"teacher": teacher}, cache_teacher, cache_max_mb, cache_batch_size)
        self.keys = [f"m{i}" for i in range(len(self.matches))]
        self.tracker = MeanTracker()
        self.student_tap: FeatureTap | None = None
        self.teacher_tap: FeatureTap | None = None
        self.projections = nn.ModuleDict()
        self.attention_was: str | None = None

    def _wanted(self, model: nn.Module, side: str) -> dict[str, tuple[str, str]]:
        wanted = {}
        for i, (key, match) in enumerate(zip(self.keys, self.matches, strict=True)):
            if match.feature != "logits":
                layer = match.teacher_layer if side == "teacher" else match.student_layer
                name = module_name(model, match.feature, layer, f"distiller.matches[{i}].{side}_layer")
                wanted[key] = (match.feature, name)
        return wanted

    def _on_teacher(self, teacher: Teacher) -> None:
        if any(m.feature == "attention" for m in self.matches):
            use_eager_attention(teacher.module)
        self.teacher_tap = FeatureTap(teacher.module, self._wanted(teacher.module, "teacher"))

    def _extract(self, teacher: Teacher, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = logits_of(teacher(inputs))
        return {"logits": logits, **{k: v.detach() for k, v in self.teacher_tap.captured.items()}}

    def attach(self, model: nn.Module, context: RunContext) -> None:
        if any(m.feature == "attention" for m in self.matches):
            self.attention_was = use_eager_attention(model)
        self.student_tap = FeatureTap(model, self._wanted(model, "student"))
        tag = repr([(m.teacher_layer, m.feature) for m in self.matches])
        text = "attention_mask" in context.input_keys  # image features (conv maps) have no token axes
        features = {key: match.feature for key, match in zip(self.keys, self.matches, strict=True)}
        axes = {key: TOKEN_AXES[f] for key, f in features.items() if f in TOKEN_AXES} if text else {}
        self.teachers.attach(context, self._extract, tag, on_load=self._on_teacher, token_axes=axes)
        with torch.random.fork_rng(devices=[context.device] if context.device.type == "cuda" else []):
            self._build_projections(model, context)  # its DataLoader must not shift the student's RNG

    @torch.no_grad()
    def _build_projections(self, model: nn.Module, context: RunContext) -> None:
        """Probe one small batch for feature shapes; add a projection wherever the student is narrower/wider.

        Without `projection`, or where a projection cannot help (attention maps), differing shapes are a ConfigError
        now, before the first optimizer step.
        """
        batch = next(iter(batching.loader(context.train_set, 2)))
        inputs = {k: batch[k].to(context.device) for k in context.input_keys if k in batch}
        was_training = model.training
        model.eval()  # no BatchNorm statistics or dropout from the probe
        model(**inputs)
        model.train(was_training)
        teacher = self.teachers.extract(self.teachers.teachers["teacher"], inputs)
        for i, (key, match) in enumerate(zip(self.keys, self.matches, strict=True)):
            if match.feature == "logits":
                continue  # the teacher's label count is checked when it loads
            student, target = self.student_tap.captured[key], teacher[key]
            if student.shape == target.shape:
                continue
            dim = 1 if student.ndim == 4 else student.ndim - 1
            widths_only = student.shape[:dim] + student.shape[dim + 1 :] == target.shape[:dim] + target.shape[dim + 1 :]
            if self.projection and match.feature in ("hidden", "embedding") and widths_only:
                self.projections[key] = nn.Linear(student.shape[dim], target.shape[dim]).to(context.device)
                continue
            fix = "set distiller.projection=true" if widths_only and not self.projection else "match other layers"
            raise ConfigError(
                f"distiller.matches[{i}]",
                f"{{teacher_layer: {show(match.teacher_layer)}, student_layer: {show(match.student_layer)}}}",
                f"must pair {match.feature} features of one shape, or {fix}",
                problem=f"pairs a student {tuple(student.shape[1:])} with a teacher {tuple(target.shape[1:])} feature",
            )
        if len(self.projections):
            model.add_module(PROJECTIONS, self.projections)  # so the trainer's optimizer trains them too

    def term(self, match: LayerMatch, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None):
        """The loss of one match for a batch."""
        if student.shape != teacher.shape:
            raise ValueError(
                f"distiller match {match}: student feature {tuple(student.shape)} and teacher feature "
                f"{tuple(teacher.shape)} differ (set distiller.projection=true for width differences)"
            )
        if match.feature == "logits":
            if match.loss == "kl":
                return losses.kd_kl(student, teacher, self.temperature)
            if match.loss == "ce":
                return losses.soft_cross_entropy(student, teacher, self.temperature)
            return losses.masked_mse(student, teacher)
        if match.loss == "kl":
            return losses.attention_kl(student, teacher, mask)
        if match.loss == "cosine":
            return losses.masked_cosine(student, teacher, mask)
        return losses.masked_mse(student, teacher, mask)

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        teacher = self.teachers(batch)["teacher"]
        mask = batch.get("attention_mask")
        terms = {}
        for key, match in zip(self.keys, self.matches, strict=True):
            student = logits_of(outputs) if match.feature == "logits" else self.student_tap.captured[key]
            if key in self.projections:
                student = _project(self.projections[key], student)
            target = teacher["logits"] if match.feature == "logits" else teacher[key]
            terms[f"kd/{key}_{match.feature}_{match.loss}"] = match.weight * self.term(match, student, target, mask)
        kd = sum(terms.values())
        self.tracker.add({"kd/task_loss": loss, "kd/loss": kd, **terms})
        return self.alpha_student * loss + kd

    def before_optimizer_step(self, step: int) -> None:
        pass

    def after_optimizer_step(self, step: int) -> None:
        pass

    def finalize(self, model: nn.Module) -> nn.Module:
        """Remove hooks and projections and restore the attention implementation: a plain student remains."""
        for tap in (self.student_tap, self.teacher_tap):
            if tap is not None:
                tap.remove()
        if PROJECTIONS in model._modules:
            delattr(model, PROJECTIONS)
        if self.attention_was not in (None, "eager"):
            model.set_attn_implementation(self.attention_was)
        self.teachers.release()
        return model

    def state_dict(self) -> dict[str, Any]:
        """Logged running means and teacher pass counts; learned projections are model submodules (its state dict)."""
        return {"tracker": self.tracker.state_dict(), "teachers": self.teachers.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.teachers.load_state_dict(state["teachers"])

    def spec(self) -> CompressionSpec:
        """No promise about the weights; with the teacher-output cache it reads each batch's `idx`."""
        return CompressionSpec(method="MultiLayerDistiller", batch_keys=self.teachers.batch_keys)

    def check(self, total_steps: int, how: str = "") -> None:
        check_trains(total_steps, how)

    def metrics(self) -> dict[str, float]:
        return self.tracker.kd_metrics(self.temperature, self.teachers.forward_passes) | self.teachers.metrics()
