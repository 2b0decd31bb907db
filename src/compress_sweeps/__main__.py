"""`python -m compress_sweeps [overrides]` / `compress-sweeps [overrides]`: one run, or a sweep with -m."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from compress_sweeps import train
from compress_sweeps.config import config_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float:
    """Run one job; return its optimized metric so Hydra sweepers (e.g. Optuna) can optimize it."""
    return train.run(cfg)


if __name__ == "__main__":
    main()
