"""A config-group choice that names no option is one line and exit 2 before Hydra composes anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from compress_sweeps.cli import choice_error


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["pruner=obs"], "pruner=obs is not an option: must be one of base | gradient |"),
        (["pruner=wanda", "pruner/method=obs"], "pruner/method=obs is not an option: must be one of magnitude | ria"),
        (["-m", "pruner=wanda,obs"], "pruner=obs is not an option"),
        (["model@distiller.teachers.main.model=nope"], "model@distiller.teachers.main.model=nope is not an option"),
        (["+pruner/criterion=nope"], "pruner/criterion=nope is not an option"),
    ],
)
def test_an_unknown_choice_is_named_with_the_options(argv, said):
    assert said in choice_error(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["pruner=wanda", "pruner/method=ria", "pruner.pattern=2:4"],
        ["-m", "pruner=oneshot_magnitude,wanda", "seed=0,1"],
        ["hydra/launcher=joblib", "hydra/sweeper=optuna"],  # Hydra's groups: plugins add options
        ["pruner=choice(wanda,sparsegpt)", "distiller=null", "trainer.max_steps=3"],
        ["-m", "sweep=mine", "hydra.searchpath=[file:///elsewhere]"],  # options from another folder: Hydra's call
    ],
)
def test_known_choices_and_other_overrides_pass(argv):
    assert choice_error(argv) is None


@pytest.mark.runs
def test_the_cli_exits_2_with_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "compress_sweeps", "pruner=wanda", "pruner/method=obs"], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: pruner/method=obs is not an option: must be one of magnitude | ria | sparsegpt | wanda"
    ]
