"""What a run leaves in its folder: results.json (atomic), model.safetensors and what rebuilds the model."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from torch import nn

from compress_sweeps.models.hf import save_hf_extras
from compress_sweeps.pruners.slim.structure import save_structure

RESULTS = "results.json"
WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model_config.yaml"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN/inf are not JSON; keep them readable
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temp file in the same folder, then rename: readers never see a half-written file."""
    write_text_atomic(path, json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: nn.Module, folder: Path, tokenizer: Any, model_config: DictConfig, num_labels: int) -> Path:
    """Save the finalized weights keyed by parameter name, plus the model config (and HF config + tokenizer).

    `hydra.utils.instantiate(model_config.yaml)` rebuilds the architecture; for Hugging Face models
    `AutoModelForSequenceClassification.from_pretrained(folder)` loads the folder directly.
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
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, weights)
    rebuild = {**OmegaConf.to_container(model_config, resolve=True), "num_labels": num_labels}
    OmegaConf.save(OmegaConf.create(rebuild), folder / MODEL_CONFIG)
    save_hf_extras(model, tokenizer, folder)
    save_structure(model, folder)  # a slim model's per-layer shapes: models.runs.from_run applies them
    return weights
