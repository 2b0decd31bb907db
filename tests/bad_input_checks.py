"""What the bad-input tests share (test_bad_inputs*.py, test_bad_text_files.py): the smoke overrides, the problem
kinds, the `{run_folder}` placeholders of their tables, and the one check that an error names its key and value."""

from __future__ import annotations

from helpers import CNN_SMOKE

from compress_sweeps.errors import config_error, show
from compress_sweeps.run.build import build, check

CNN = CNN_SMOKE
CNN_TEACHER = ["model@distiller.teacher.model=cnn_teacher", "distiller.teacher.finetune=null"]
RANGE, NO_LAYER, TYPE, UNKNOWN = "is out of range", "matches no layer", "has the wrong type", "is unknown"
NOT_FINITE, NO_DEVICE, BAD_REGEX = "is not a finite number", "is not a usable device", "is invalid"
CNN_DIGITS = ["task=digits", "model=cnn"]


def filled(items, folders: dict[str, str]):
    if isinstance(items, list):
        return [filled(item, folders) for item in items]
    if not isinstance(items, str):
        return items
    for name, folder in folders.items():
        items = items.replace(f"{{{name}}}", folder)
    return items


def check_config(cfg, train_size: int | None = None) -> list[str]:
    """What a job and the sweep precheck run before anything loads; returns the warnings a run would record."""
    return check(build(cfg), cfg, train_size)


def assert_names(error: BaseException, key: str, value, problem: str) -> None:
    """The error is a one-line ConfigError naming `key` and `value`, of the kind `problem` says."""
    cause = config_error(error)
    assert cause is not None, f"not a ConfigError: {error!r}"
    assert (cause.key, show(cause.value)) == (key, show(value)), str(cause)
    assert cause.problem.startswith(problem), str(cause)
    assert "\n" not in str(cause)
