"""Which subprocesses a test starts: a Python one costs seconds of imports, so its test is marked `runs`."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def starts_python(args) -> bool:
    """Whether Popen `args` start a Python interpreter or a script of this environment (lint-imports, torchrun)."""
    if isinstance(args, (str, bytes)):
        first = (os.fsdecode(args).split() or [""])[0]  # shell form: the program is the first word
    elif isinstance(args, os.PathLike):
        first = os.fspath(args)
    else:
        first = os.fsdecode(next(iter(args), ""))
    program = Path(first)
    return program.name.startswith("python") or program.parent == Path(sys.executable).parent
