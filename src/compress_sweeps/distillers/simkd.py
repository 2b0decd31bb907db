"""SimKD (Chen et al., CVPR 2022, "Knowledge Distillation with the Reused Teacher Classifier").

The student's final features, through a trainable projector, feed the teacher's frozen classifier; the loss is
`alpha_kd` * MSE(projector(student features), teacher features) (+ `alpha_student` * task loss, 0 in the paper).
"Final features" are the input of the classification head `head` (an `nn.Linear` in both models): the pooled [CLS]
output of a BERT-family model (after its dropout while training), the hidden layer of the CNN.

`attach` swaps the student's head for `ReusedHead(projector, frozen copy of the teacher's head)`: the trainer builds
its optimizer from the model's trainable parameters after `attach`, so the projector trains with the student, and
the model `finalize` returns predicts teacher_head(projector(features)) when it is evaluated, measured (the projector
and head counted) and saved. `save_model` asks the head how to rebuild it (`rebuild_config`: `with_reused_head`
around the student's own config), so `model=from_run` reloads the run folder.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from pydantic import Field
from torch import nn

from compress_sweeps.distillers.outputs import TeacherOutputs, check_trains
from compress_sweeps.distillers.teacher import Teacher
from compress_sweeps.distillers.tracker import MeanTracker
from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext
from compress_sweeps.kinds import builds
from compress_sweeps.models.untrained import mark_untrained, untrained_parameters
from compress_sweeps.spec import CompressionSpec

PROJECTORS = ("linear", "mlp")


def build_projector(kind: str, student_width: int, teacher_width: int, hidden_factor: int = 2) -> nn.Module:
    """Student width -> teacher width: `linear`, or `mlp` (Linear -> ReLU -> Linear through teacher_width //
    hidden_factor units: the paper's 1x1-conv bottleneck for feature vectors, without its BatchNorm and without its
    final ReLU, which would clip the signed tanh features of a BERT pooler)."""
    if kind == "linear":
        return nn.Linear(student_width, teacher_width)
    hidden = max(1, teacher_width // hidden_factor)
    return nn.Sequential(nn.Linear(student_width, hidden), nn.ReLU(), nn.Linear(hidden, teacher_width))


class ReusedHead(nn.Module):
    """teacher_head(projector(features)), in place of the student's classifier; the teacher head is frozen."""

    def __init__(self, projector: nn.Module, head: nn.Linear, settings: Mapping[str, Any]) -> None:
        super().__init__()
        self.projector, self.head = projector, head.requires_grad_(False)
        self.settings = dict(settings)  # with_reused_head's arguments besides the model: how to rebuild this head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.projector(features))

    def rebuild_config(self, model_config: DictConfig) -> DictConfig:
        """The config that rebuilds a model holding this head: `with_reused_head` around the model's own config
        (models/runs.py `save_model` asks every module of the saved model, through its `RebuiltBy` protocol)."""
        inner = OmegaConf.to_container(model_config, resolve=True)
        inner["_partial_"] = True  # built by with_reused_head with the saved label count
        target = f"{__name__}.with_reused_head"
        return OmegaConf.create({"_target_": target, "model": inner, **self.settings})


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _inner(node: DictConfig) -> DictConfig | None:
    return node.get("model")


@builds("model", like=_inner)  # takes and predicts what the student's own config builds
def with_reused_head(
    num_labels: int,
    model: Callable[..., nn.Module],
    student_width: Annotated[int, Field(ge=1)],
    teacher_width: Annotated[int, Field(ge=1)],
    head: str = "classifier",
    projector: Literal["linear", "mlp"] = "linear",
    hidden_factor: Annotated[int, Field(ge=1)] = 2,
    bias: bool = True,
) -> nn.Module:
    """`model(num_labels=...)` with its `head` replaced by a (freshly initialised) ReusedHead of these shapes: the
    architecture of a SimKD run's saved model, whose weights `from_run` loads next."""
    built = model(num_labels=num_labels)
    reused = ReusedHead(
        build_projector(projector, student_width, teacher_width, hidden_factor),
        nn.Linear(teacher_width, num_labels, bias=bias),
        {
            "student_width": student_width,
            "teacher_width": teacher_width,
            "head": head,
            "projector": projector,
            "hidden_factor": hidden_factor,
            "bias": bias,
        },
    )
    _replace(built, head, reused)
    untrained = [n for n in untrained_parameters(built) if not n.startswith(f"{head}.")]
    mark_untrained(built, untrained + [f"{head}.{n}" for n, _ in reused.named_parameters()])
    return built


def linear_head(model: nn.Module, name: str, side: str) -> nn.Linear:
    """The classification head `name` of the student or teacher (`side`): an nn.Linear, whose input is reused."""
    module = dict(model.named_modules()).get(name)
    if type(module) is not nn.Linear:
        found = "no such module" if module is None else f"a {type(module).__name__}"
        raise ConfigError(
            "distiller.head",
            name,
            f"must name the nn.Linear classification head of both models (the {side} {type(model).__name__} has "
            f"{found} there; a pruner or quantizer must leave the head alone)",
            problem=f"is no linear head of the {side}",
        )
    return module


class SimKD:
    """Feature alignment through the teacher's reused classifier, from one frozen teacher (`distiller=simkd`)."""

    def __init__(
        self,
        teacher: Teacher,
        alpha_kd: Annotated[float, Field(gt=0)] = 1.0,
        alpha_student: Annotated[float, Field(ge=0)] = 0.0,
        head: str = "classifier",
        projector: Literal["linear", "mlp"] = "linear",
        hidden_factor: Annotated[int, Field(ge=1)] = 2,
        cache_teacher: bool = True,
        cache_max_mb: float = 2000.0,
        cache_batch_size: int = 64,
    ) -> None:
        if alpha_kd <= 0:
            raise ConfigError(
                "distiller.alpha_kd", alpha_kd, "must be > 0: it weights the feature loss (distiller=none runs without)"
            )
        if alpha_student < 0:
            raise ConfigError("distiller.alpha_student", alpha_student, "must be >= 0")
        if projector not in PROJECTORS:
            raise ConfigError("distiller.projector", projector, f"must be one of {list(PROJECTORS)}", "is unknown")
        if isinstance(hidden_factor, bool) or not isinstance(hidden_factor, int) or hidden_factor < 1:
            raise ConfigError("distiller.hidden_factor", hidden_factor, "must be an integer >= 1")
        if not head:
            raise ConfigError("distiller.head", head, "must name the classification head module, e.g. classifier")
        teacher.key = "distiller.teacher"
        self.alpha_kd, self.alpha_student, self.head = alpha_kd, alpha_student, head
        self.projector, self.hidden_factor = projector, hidden_factor
        self.teachers = TeacherOutputs({"teacher": teacher}, cache_teacher, cache_max_mb, cache_batch_size)
        self.tracker = MeanTracker()
        self.teacher_head: nn.Linear | None = None
        self.captured: dict[str, torch.Tensor] = {}  # the latest teacher features and projected student features
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def _on_teacher(self, teacher: Teacher) -> None:
        self.teacher_head = linear_head(teacher.module, self.head, "teacher")
        self.handles.append(self.teacher_head.register_forward_pre_hook(self._keep("teacher")))

    def _keep(self, key: str) -> Callable:
        def keep(module: nn.Module, inputs: tuple, output: Any = None) -> None:  # a pre-hook passes no output
            self.captured[key] = inputs[0] if output is None else output

        return keep

    def _extract(self, teacher: Teacher, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        teacher(inputs)
        return {"features": self.captured.pop("teacher").detach()}

    def attach(self, model: nn.Module, context: RunContext) -> None:
        student_head = linear_head(model, self.head, "student")  # before the teacher loads: fail fast
        self.teachers.attach(context, self._extract, tag=f"simkd:{self.head}", on_load=self._on_teacher)
        settings = dict(
            student_width=student_head.in_features,
            teacher_width=self.teacher_head.in_features,
            head=self.head,
            projector=self.projector,
            hidden_factor=self.hidden_factor,
            bias=self.teacher_head.bias is not None,
        )
        with torch.random.fork_rng(devices=[context.device] if context.device.type == "cuda" else []):
            # drawn from the run's seed without shifting the student's RNG stream (dropout, data order)
            built = build_projector(
                self.projector, settings["student_width"], settings["teacher_width"], self.hidden_factor
            )
        reused = ReusedHead(built, copy.deepcopy(self.teacher_head), settings).to(context.device)
        _replace(model, self.head, reused)  # a submodule of the student: the trainer's optimizer trains the projector
        self.handles.append(reused.projector.register_forward_hook(self._keep("student")))

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        target = self.teachers(batch)["teacher"]["features"]
        projected = self.captured["student"]
        kd = F.mse_loss(projected, target.to(projected.dtype))
        self.tracker.add({"kd/task_loss": loss, "kd/loss": kd})
        return self.alpha_student * loss + self.alpha_kd * kd

    def before_optimizer_step(self, step: int) -> None:
        pass

    def after_optimizer_step(self, step: int) -> None:
        pass

    def finalize(self, model: nn.Module) -> nn.Module:
        """Remove the hooks and drop the teacher; the student keeps its projector and the reused head."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.captured.clear()
        self.teacher_head = None
        self.teachers.release()
        return model

    def state_dict(self) -> dict[str, Any]:
        """Logged running means and teacher pass counts; the projector and head are in the model's state dict."""
        return {"tracker": self.tracker.state_dict(), "teachers": self.teachers.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.teachers.load_state_dict(state["teachers"])

    def spec(self) -> CompressionSpec:
        """No promise about the weights; with the teacher-output cache it reads each batch's `idx`."""
        return CompressionSpec(method="SimKD", batch_keys=self.teachers.batch_keys)

    def check(self, total_steps: int, how: str = "") -> None:
        check_trains(total_steps, how)

    def metrics(self) -> dict[str, float]:
        passes = {"kd/teacher_forward_passes": float(self.teachers.forward_passes)}
        return self.tracker.means() | passes | self.teachers.metrics()
