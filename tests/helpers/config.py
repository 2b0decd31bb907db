"""Hydra composition as a job sees it, and the override lists that most run tests start from."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from compress_sweeps.config import config_dir

CONF = config_dir()
CNN_SMOKE = ["task=digits", "model=cnn", "trainer=smoke", "logger=none", "trainer.progress=false"]  # seconds


def compose_cfg(overrides: list[str], output_dir: Path | None = None, keep_hydra: bool = False) -> DictConfig:
    """The composed train config with Hydra's runtime config set, as `python -m compress_sweeps` would see it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    if not keep_hydra:
        with open_dict(cfg):
            del cfg["hydra"]  # as in a real run: the job's config holds no hydra node
    return cfg


def tiny_text_overrides(text_csvs: tuple[Path, Path], model: Path) -> list[str]:
    """Overrides for a text run on the CSV fixtures with a local Hugging Face model (e.g. the tiny BERT)."""
    return [
        "task=text_files",
        f"task.train_file={text_csvs[0]}",
        f"task.validation_file={text_csvs[1]}",
        "task.max_length=16",
        "model=hf",
        f"model.name_or_path={model}",
    ]
