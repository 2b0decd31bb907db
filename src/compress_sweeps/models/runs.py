"""Rebuild the finalized model of a previous run from its folder (e.g. a fine-tuned dense run used as a teacher)."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.pruners.slim.structure import load_structure

# the file names written by compress_sweeps.artifacts.save_model (not imported: artifacts imports models)
WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model_config.yaml"


def from_run(folder: str, num_labels: int) -> nn.Module:
    """The model saved in a run folder: `model_config.yaml` rebuilds the architecture, `model.safetensors` fills it.

    `num_labels` must match the saved head, so a teacher trained on another task fails loudly instead of
    silently distilling the wrong classes.
    """
    root = Path(folder).expanduser()
    config_path, weights_path = root / MODEL_CONFIG, root / WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(
            f"folder='{folder}' is not a finished run folder: it needs {MODEL_CONFIG} and {WEIGHTS}"
        )
    config = OmegaConf.load(config_path)
    saved_labels = config.pop("num_labels", num_labels)
    if saved_labels != num_labels:
        raise ConfigError(
            "model.folder",
            folder,
            f"must hold a model with this task's {num_labels} labels; it holds {saved_labels} labels",
            problem="has another label set",
        )
    model = instantiate(config, num_labels=num_labels)
    load_structure(model, root)  # a slim model's per-layer shapes (heads, widths, blocks, channels), if any
    model.load_state_dict(load_file(str(weights_path)), strict=True)
    return model
