"""Where the Hydra configs live: inside the package when installed from a wheel, at the repo top otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """`conf/` shipped in the wheel (compress_sweeps/conf), or the repo's top-level `conf/` (editable install)."""
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/train.yaml next to {PACKAGE_DIR}: is compress_sweeps installed correctly?")


def compose_train(overrides: Sequence[str] = ()) -> DictConfig:
    """`conf/train.yaml` with `overrides`, composed as a run composes it, outside a Hydra app (benches, examples)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides))
