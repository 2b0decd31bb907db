"""The project's one error type for bad settings, and how any error is shown in one line (a leaf module).

`ConfigError` is raised wherever a value is found unusable: by a constructor checking its own arguments, by the
pre-launch checks (run/build.py), or by a method's `attach` (a regex that matches no layer). The CLI prints it as
`error: <key>=<value> <problem>: <what is allowed>` and exits with code 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.errors import InstantiationException


class ConfigError(ValueError):
    """A setting that cannot work: `<key>=<value> <problem>: <what is allowed>` in one line."""

    def __init__(self, key: str, value: Any, allowed: str, problem: str = "is out of range") -> None:
        self.key, self.value, self.allowed, self.problem = key, value, allowed, problem
        super().__init__(f"{key}={show(value)} {problem}: {allowed}")

    def under(self, prefix: str) -> ConfigError:
        """The same error for a key nested under `prefix` (e.g. a teacher's `model.folder`)."""
        return ConfigError(f"{prefix}{self.key}", self.value, self.allowed, self.problem)


def show(value: Any) -> str:
    """A value as the user would type it on the command line."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(show(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def no_layer_error(
    model: Any, key: str, include: Sequence[str], exclude: Sequence[str], kinds: Sequence[str]
) -> ConfigError:
    """The error for a selection that matches no layer: names the regex key at fault and some layers it could match."""
    names = [n for n, m in model.named_modules() if type(m).__name__ in kinds and n]
    some = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "") if names else "none"
    which, value = (f"{key}include", list(include)) if include else (f"{key}exclude", list(exclude))
    return ConfigError(
        which,
        value,
        f"must select at least one {'/'.join(kinds)} layer of this {type(model).__name__} (with {key}exclude="
        f"{list(exclude)}); its {'/'.join(kinds)} layers: {some}",
        problem="matches no layer",
    )


def root_cause(error: BaseException) -> BaseException:
    """`error` without Hydra's InstantiationException wrappers around it."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def config_error(error: BaseException) -> ConfigError | None:
    """The ConfigError behind `error`, also when Hydra wrapped it in an InstantiationException; else None."""
    error = root_cause(error)
    return error if isinstance(error, ConfigError) else None


def describe(error: BaseException) -> str:
    """'ValueError: trainer.lr=-1 is out of range...': the root cause, not Hydra's instantiation wrapper."""
    error = root_cause(error)
    return f"{type(error).__name__}: {error}"
