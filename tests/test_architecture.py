"""The architecture is a checked contract: import-linter's layers and acyclic-siblings contracts (pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(root / "src"), "PATH": str(LINT_IMPORTS.parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.runs
def test_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.runs
def test_a_method_importing_the_training_loop_breaks_the_contract(tmp_path):
    """The contract is not vacuous: a pruner module that imports trainer.py (the old way to reach logits_of) fails."""
    shutil.copytree(ROOT / "src", tmp_path / "src")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    criteria = tmp_path / "src" / "compress_sweeps" / "pruners" / "criteria.py"
    criteria.write_text(criteria.read_text() + "\nfrom compress_sweeps.trainer import Trainer  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert "compress_sweeps.pruners.criteria -> compress_sweeps.trainer" in result.stdout
