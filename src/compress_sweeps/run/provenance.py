"""Which code made a run (results.json -> `code`): the package version and, when it runs from a git checkout, the
commit and whether its tracked files (code and conf/) differed from it. Tables built from many runs print the
commits they came from."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1]  # src/compress_sweeps: inside a checkout, git answers for it


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=SOURCE, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):  # no git, not a checkout (installed from a wheel), or too slow
        return None
    return done.stdout.strip()


def code_version() -> dict:
    """{"version": the installed package's version or None, "commit": HEAD or None, "dirty": bool or None}."""
    try:
        package = version("compress_sweeps")
    except PackageNotFoundError:
        package = None
    tracked = _git("ls-files", "__init__.py")  # empty: a copy inside some other repository (a venv in a checkout)
    commit = _git("rev-parse", "HEAD") if tracked else None
    changes = _git("status", "--porcelain", "--untracked-files=no", ":/") if commit else None  # conf/ counts too
    return {"version": package, "commit": commit, "dirty": None if changes is None else bool(changes)}
