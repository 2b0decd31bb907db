"""The package works from a built wheel: configs ship inside it and the console script is declared."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.runs
def test_wheel_ships_configs_and_console_script(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    wheel = next(tmp_path.glob("compress_sweeps-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"compress_sweeps/{p.relative_to(ROOT)}" for p in (ROOT / "conf").rglob("*.yaml")}
    # conf/sweep is a link to the top-level sweeps/ folder: the wheel holds real copies of the files
    expected |= {f"compress_sweeps/conf/sweep/{p.name}" for p in (ROOT / "sweeps").glob("*.yaml")}
    assert expected <= names, sorted(expected - names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "compress-sweeps = compress_sweeps.cli:cli" in zipfile.ZipFile(wheel).read(entry_points).decode()
    # installed from the wheel (no repo around it), the package finds its configs
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = "from compress_sweeps.config import config_dir; print(config_dir())"
    found = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found) == target / "compress_sweeps" / "conf"
    # and a whole job runs from it, a named sweep included (conf/sweep holds copies of sweeps/)
    env = {**os.environ, "PYTHONPATH": str(target)}
    smoke = ["task=digits", "model=cnn", "trainer=smoke", "logger=none", "trainer.progress=false"]
    job = [sys.executable, "-m", "compress_sweeps", "-m", "sweep=seeds", *smoke, f"hydra.sweep.dir={tmp_path / 's'}"]
    done = subprocess.run(job, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "s").glob("*/results.json"))) == 3
