"""What a model or task builder builds, declared beside the builder (`@builds(...)`), so the pre-launch pass can
match a run's task and models without knowing any builder by name.

A task declares the data it gives (`Kind(modality="text", labels="classes")`); a model builder declares what it
takes and predicts and its architecture family (`Kind("images", "classes", family="cnn")`). A builder that wraps
another model config (a fine-tuned model, a previous run's folder) declares `like=`: the config whose kind it has.
A builder may also declare `precheck`, its checks beyond value types (a task's files, a model folder that must
exist), run before anything loads. A builder that declares nothing is not matched: the pre-launch pass says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from hydra.utils import get_object
from omegaconf import DictConfig

Builder = TypeVar("Builder", bound=Callable[..., Any])


@dataclass(frozen=True)
class Kind:
    """The inputs (`modality`) and the prediction (`labels`: one class per example, or the next token at every
    position) of a task or a model, and a model's architecture `family` (`encoder`, `cnn`, `decoder`; None for a
    task). What a task's `labels` are decides its loss and metrics (compress_sweeps/objectives.py)."""

    modality: Literal["text", "images"]
    labels: Literal["classes", "tokens"] = "classes"
    family: str | None = None

    def mismatch(self, task: Kind) -> str | None:
        """Why a model of this kind cannot run on a task of kind `task`, or None."""
        if self.modality != task.modality:
            return f"takes {self.modality}"
        if self.labels != task.labels:
            return f"predicts {self.labels}"
        return None


@dataclass(frozen=True)
class Declaration:
    role: Literal["model", "task"]
    kind: Callable[[DictConfig], Kind | None]
    precheck: Callable[[DictConfig, str], list[str] | None] | None = None


DECLARED: dict[Any, Declaration] = {}


def builds(
    role: Literal["model", "task"],
    kind: Kind | None = None,
    *,
    like: Callable[[DictConfig], DictConfig | None] | None = None,
    precheck: Callable[[DictConfig, str], list[str] | None] | None = None,
) -> Callable[[Builder], Builder]:
    """Declare what the decorated builder (a function or class) builds: `kind`, or the kind of the config `like`
    gives for a node (None: not known before it is built); `precheck(node, prefix)` returns warnings (or None)
    and raises a ConfigError naming `prefix` + key for a value that cannot work."""
    if (kind is None) == (like is None):
        raise TypeError("declare exactly one of kind= and like=")

    def of(node: DictConfig) -> Kind | None:
        if kind is not None:
            return kind
        inner = like(node)
        return None if inner is None else kind_of(inner)

    def declare(builder: Builder) -> Builder:
        DECLARED[builder] = Declaration(role, of, precheck)
        return builder

    return declare


def declaration(node: Any) -> Declaration | None:
    """The declaration of the builder a config node's `_target_` names, or None (no `_target_`, not importable, or
    a builder that declares nothing)."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    try:
        return DECLARED.get(get_object(str(node._target_)))
    except Exception:
        return None


def kind_of(node: DictConfig) -> Kind | None:
    """The declared kind of what a config node builds (None when undeclared or not known before building)."""
    found = declaration(node)
    return None if found is None else found.kind(node)


def builds_model(node: Any) -> bool:
    """Whether a config node builds a model a builder has declared (the run's model, a teacher)."""
    found = declaration(node)
    return found is not None and found.role == "model"


def precheck(node: DictConfig, prefix: str) -> list[str]:
    """The declared builder's own checks of a config node (none when it declares none); returns its warnings."""
    found = declaration(node)
    if found is None or found.precheck is None:
        return []
    return found.precheck(node, prefix) or []
