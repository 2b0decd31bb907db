"""A run folder's model files: `save_model` writes them, `from_run` rebuilds the finalized model from them (e.g. a
fine-tuned dense run used as a teacher, or as the starting point of a pruning sweep).

`model_config.yaml` rebuilds the architecture; a model whose shapes differ from what it rebuilds (units cut out by
structured slimming) also gets `slim_structure.json` (models/structure.py), applied before the weights load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from compress_sweeps.errors import ConfigError, write_error
from compress_sweeps.models import structure
from compress_sweeps.models.hf import save_hf_extras
from compress_sweeps.models.untrained import mark_trained

WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model_config.yaml"


def saved_config(folder: str) -> DictConfig:
    """The model config a run folder was saved with; a ConfigError naming `model.folder` when it is no run folder."""
    root = Path(folder).expanduser()
    if not (root / MODEL_CONFIG).is_file() or not (root / WEIGHTS).is_file():
        raise ConfigError(
            "model.folder",
            folder,
            f"must be a finished run folder holding {MODEL_CONFIG} and {WEIGHTS}",
            problem="does not exist" if not root.exists() else "is not a run folder",
        )
    return OmegaConf.load(root / MODEL_CONFIG)


def from_run(folder: str, num_labels: int) -> nn.Module:
    """The model saved in a run folder: `model_config.yaml` rebuilds the architecture, `slim_structure.json` (when
    there is one) gives it the saved shapes, `model.safetensors` fills it.

    `num_labels` must match the saved head, so a teacher trained on another task fails loudly instead of
    silently distilling the wrong classes.
    """
    return load_saved(architecture(folder, num_labels), folder)


def architecture(folder: str, num_labels: int) -> nn.Module:
    """The model `model_config.yaml` builds, at the config's shapes and before the saved weights are loaded (for a
    slimmed run: the model it started from)."""
    config = saved_config(folder)
    saved_labels = config.pop("num_labels", num_labels)
    if saved_labels != num_labels:
        raise ConfigError(
            "model.folder",
            folder,
            f"must hold a model with this task's {num_labels} labels; it holds {saved_labels} labels",
            problem="has another label set",
        )
    return instantiate(config, num_labels=num_labels)


def saved_num_labels(folder: str) -> int:
    """The head size the run folder's model was saved with."""
    return int(saved_config(folder)["num_labels"])


def load_saved(model: nn.Module, folder: str) -> nn.Module:
    """Give `model` (built by `architecture`) the saved shapes and weights, exactly (strict)."""
    root = Path(folder).expanduser()
    structure.load(model, root)
    model.load_state_dict(load_file(str(root / WEIGHTS)), strict=True)
    mark_trained(model)  # the builder may have drawn a new head; the saved run's weights replaced it
    return model


def save_model(
    model: nn.Module,
    folder: Path,
    tokenizer: Any,
    model_config: DictConfig,
    num_labels: int,
    reference: nn.Module | None = None,
) -> Path:
    """Save the finalized weights keyed by parameter name, plus the model config (and HF config + tokenizer).

    `hydra.utils.instantiate(model_config.yaml)` rebuilds the architecture; for Hugging Face models
    `AutoModelForSequenceClassification.from_pretrained(folder)` loads the folder directly. `reference` is the
    model that config builds (the run's dense reference): where `model`'s shapes differ from it, the shape record
    goes beside the weights, and `from_run` applies it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        tensors[name] = tensor.clone() if pointer in seen else tensor  # safetensors refuses shared storage
        seen.add(pointer)
    weights = folder / WEIGHTS
    tmp = folder / f".{WEIGHTS}.tmp"
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, weights)
    except Exception as error:  # safetensors reports a full disk in its own words: name the cause
        failure = write_error(weights, error)
        tmp.unlink(missing_ok=True)
        raise failure from error
    rebuild = {**OmegaConf.to_container(model_config, resolve=True), "num_labels": num_labels}
    OmegaConf.save(OmegaConf.create(rebuild), folder / MODEL_CONFIG)
    save_hf_extras(model, tokenizer, folder)
    (folder / structure.STRUCTURE).unlink(missing_ok=True)  # a re-run into the folder: no stale record
    if reference is not None and structure.differs(model, reference):
        structure.save(model, folder)
    return weights
