"""The project's one error type for bad settings, and how any error is shown in one line (a leaf module).

`ConfigError` is raised wherever a value is found unusable: by a constructor checking its own arguments, by the
pre-launch checks (run/build.py), or by a method's `attach` (a regex that matches no layer). The CLI prints it as
`error: <key>=<value> <problem>: <what is allowed>` and exits with code 2.
"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Sequence
from pathlib import Path
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


def write_error(path: str | os.PathLike, error: BaseException) -> OSError:
    """An OSError that says why `path` could not be written whole: no space left, the file size limit (ulimit -f),
    a read-only file system or folder, or the library's own words (torch.save reports a full disk as
    `[enforce fail at inline_container.cc] unexpected pos`)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on the device"
    elif isinstance(error, OSError) and error.errno == errno.EFBIG or _beyond_size_limit(path):
        reason = f"the file size limit (ulimit -f: {resource.getrlimit(resource.RLIMIT_FSIZE)[0]} bytes) was reached"
    elif isinstance(error, OSError) and error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason = f"read-only ({error.strerror})"
    elif _free_bytes(path) == 0:
        reason = "no space left on the device"
    else:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    code = error.errno if isinstance(error, OSError) and error.errno else errno.EIO
    return OSError(code, f"cannot write {path}: {reason}")


def _beyond_size_limit(path: str | os.PathLike) -> bool:
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return limit != resource.RLIM_INFINITY and any(
        p.is_file() and p.stat().st_size >= limit for p in Path(path).parent.glob(f".{Path(path).name}*")
    )


def _free_bytes(path: str | os.PathLike) -> int | None:
    try:
        stats = os.statvfs(Path(path).parent)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def describe(error: BaseException) -> str:
    """'ValueError: trainer.lr=-1 is out of range...': the root cause, not Hydra's instantiation wrapper."""
    error = root_cause(error)
    return f"{type(error).__name__}: {error}"
