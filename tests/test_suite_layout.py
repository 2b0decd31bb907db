"""The test suite's own structure: plain helpers in tests/helpers/, only fixtures and hooks in conftest.py (never
imported), and a Python subprocess only from a test marked `runs` (what keeps `make test` fast as the suite grows)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import starts_python

TESTS = Path(__file__).resolve().parent
MODULES = sorted(TESTS.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """The top-level names of every module `path` imports, at any depth of its code (imports inside tests too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(TESTS)))
def test_no_module_imports_conftest(path):
    """Fixtures are injected by name; a plain helper is imported from `helpers`, never from conftest."""
    assert "conftest" not in imported_modules(path), f"{path.name}: import it from helpers (tests/helpers/)"


def test_conftest_holds_only_fixtures_and_hooks():
    tree = ast.parse((TESTS / "conftest.py").read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            fixture = any("pytest.fixture" in ast.unparse(decorator) for decorator in node.decorator_list)
            assert fixture or node.name.startswith("pytest_"), f"{node.name}: a plain helper belongs in tests/helpers/"
        assert not isinstance(node, ast.ClassDef), f"{node.name}: a plain helper belongs in tests/helpers/"


def test_helpers_define_no_fixtures():
    for path in sorted((TESTS / "helpers").glob("*.py")):
        assert "pytest.fixture" not in path.read_text(), f"{path.name}: a fixture belongs in conftest.py"


@pytest.mark.parametrize(
    "args, python",
    [
        ([sys.executable, "-m", "compress_sweeps"], True),
        ([Path(sys.executable).with_name("lint-imports"), "--no-cache"], True),
        ("python3 -c pass", True),
        (["git", "status"], False),
        ("true", False),
    ],
)
def test_which_subprocesses_count_as_python(args, python):
    assert starts_python(args) is python


def test_an_unmarked_test_cannot_start_python_but_can_start_other_programs():
    with pytest.raises(pytest.fail.Exception, match="mark it @pytest.mark.runs"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert subprocess.run(["true"], check=True).returncode == 0


@pytest.mark.runs
def test_a_marked_test_starts_python():
    done = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "42"
