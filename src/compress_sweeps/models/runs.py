"""A run folder's model files: `save_model` writes them, `from_run` rebuilds the finalized model from them (e.g. a
fine-tuned dense run used as a teacher, or as the starting point of a pruning sweep).

`model_config.yaml` rebuilds the architecture; a model whose shapes differ from what it rebuilds (units cut out by
structured slimming) also gets `slim_structure.json` (models/structure.py), applied before the weights load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from compress_sweeps.errors import ConfigError, write_error
from compress_sweeps.kinds import builds
from compress_sweeps.models import structure
from compress_sweeps.models.hf import save_hf_extras
from compress_sweeps.models.untrained import mark_trained

WEIGHTS = "model.safetensors"
TIED = "tied"  # model.safetensors metadata: {name: the name it is tied to}, each tied tensor stored once
RESULTS = "results.json"  # run/artifacts.py's name: a run folder's record, read here for what the run cut out
MODEL_CONFIG = "model_config.yaml"


@runtime_checkable
class RebuiltBy(Protocol):
    """A module its model's own config does not build (SimKD's projector + reused teacher head in place of the
    classifier, distillers/simkd.py): it returns the config that rebuilds the model around it, which `save_model`
    saves as `model_config.yaml` instead, so `from_run` rebuilds the whole model."""

    def rebuild_config(self, model_config: DictConfig) -> DictConfig: ...


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
    if not (root / structure.STRUCTURE).is_file() and (changed := changed_shapes(root)):
        raise _lacks_structure(folder, f"its results.json says {changed}")
    return OmegaConf.load(root / MODEL_CONFIG)


def changed_shapes(root: Path) -> str | None:
    """What the run's results.json (`compression.structure`) says was cut out of its model, or None: its saved
    shapes are the ones `model_config.yaml` builds."""
    try:
        report = (json.loads((root / RESULTS).read_text()).get("compression") or {}).get("structure") or {}
    except (OSError, ValueError):
        return None
    blocks = [f"{name} kept {b['kept']} of {b['total']}" for name, b in (report.get("blocks") or {}).items()]
    layers = [
        f"{n} kept {x['kept']} of {x['total']}"
        for n, x in (report.get("layers") or {}).items()
        if x["kept"] != x["total"]
    ]
    changed = blocks + layers
    return ", ".join(changed[:2]) + (", ..." if len(changed) > 2 else "") if changed else None


def _lacks_structure(folder: str, why: str) -> ConfigError:
    return ConfigError(
        "model.folder",
        folder,
        f"must hold {structure.STRUCTURE} beside {WEIGHTS}: the model there was slimmed ({why}), and its shapes are "
        f"not the ones {MODEL_CONFIG} builds; copy the whole run folder",
        problem=f"lacks {structure.STRUCTURE}",
    )


def _saved(model: DictConfig) -> DictConfig | None:
    return saved_config(str(model.folder)) if "folder" in model else None


def _check_folder(model: DictConfig, prefix: str) -> None:
    """The folder must hold a saved model (and its shape record when it was slimmed)."""
    try:
        _saved(model)
    except ConfigError as error:  # saved_config names `model.folder`: put it where this node lives
        raise error.under(prefix.removesuffix("model.")) from None


@builds("model", like=_saved, precheck=_check_folder)
def from_run(folder: str, num_labels: int | None) -> nn.Module:
    """The model saved in a run folder: `model_config.yaml` rebuilds the architecture, `slim_structure.json` (when
    there is one) gives it the saved shapes, `model.safetensors` fills it.

    `num_labels` must match the saved head, so a teacher trained on another task fails loudly instead of
    silently distilling the wrong classes.
    """
    return load_saved(architecture(folder, num_labels), folder)


def architecture(folder: str, num_labels: int | None) -> nn.Module:
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


def saved_num_labels(folder: str) -> int | None:
    """The head size the run folder's model was saved with (None: a causal LM, which predicts its vocabulary)."""
    labels = saved_config(folder)["num_labels"]
    return None if labels is None else int(labels)


def load_weights(path: Path | str, tied: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a saved model.safetensors; with `tied`, also each tied name (stored once, recorded in the
    file's metadata) as the tensor it is tied to, as the model's state_dict has it."""
    weights = load_file(str(path))
    if tied:
        with safe_open(str(path), framework="pt") as handle:
            ties = json.loads((handle.metadata() or {}).get(TIED, "{}"))
        weights |= {name: weights[owner] for name, owner in ties.items()}
    return weights


def load_saved(model: nn.Module, folder: str) -> nn.Module:
    """Give `model` (built by `architecture`) the saved shapes and weights, exactly (strict)."""
    root = Path(folder).expanduser()
    structure.load(model, root)
    weights = load_weights(root / WEIGHTS)
    built = model.state_dict()
    differ = [
        f"{n}: saved {list(weights[n].shape)}, built {list(t.shape)}"
        for n, t in built.items()  # in the model's order: the first layer that differs is named first
        if n in weights and t.shape != weights[n].shape
    ]
    if differ:  # torch would say "size mismatch"; say which file is missing (or does not fit) instead
        if not (root / structure.STRUCTURE).is_file():
            raise _lacks_structure(folder, f"e.g. {differ[0]}")
        raise ConfigError(
            "model.folder",
            folder,
            f"must hold weights of the shapes its {structure.STRUCTURE} records (e.g. {differ[0]})",
            problem="holds weights of other shapes",
        )
    model.load_state_dict(weights, strict=True)
    mark_trained(model)  # the builder may have drawn a new head; the saved run's weights replaced it
    return model


def save_model(
    model: nn.Module,
    folder: Path,
    tokenizer: Any,
    model_config: DictConfig,
    num_labels: int | None,
    reference: nn.Module | None = None,
) -> Path:
    """Save the finalized weights keyed by parameter name, plus the model config (and HF config + tokenizer).

    `hydra.utils.instantiate(model_config.yaml)` rebuilds the architecture; for Hugging Face models
    `AutoModelForSequenceClassification.from_pretrained(folder)` loads the folder directly. `reference` is the
    model that config builds (the run's dense reference): where `model`'s shapes differ from it, the shape record
    goes beside the weights, and `from_run` applies it. A module of `model` that its config does not build says how
    to rebuild it (`RebuiltBy`): the saved config is then its wrapper around `model_config`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, owners, tied, seen = {}, {}, {}, set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        view = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if view in owners:  # a tied weight (a causal LM's lm_head is its token embeddings): stored once
            tied[name] = owners[view]
            continue
        owners[view] = name
        tensor = tensor.cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        tensors[name] = tensor.clone() if pointer in seen else tensor  # safetensors refuses shared storage
        seen.add(pointer)
    weights = folder / WEIGHTS
    tmp = folder / f".{WEIGHTS}.tmp"
    metadata = {"format": "pt"} | ({TIED: json.dumps(tied)} if tied else {})
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, weights)
    except Exception as error:  # safetensors reports a full disk in its own words: name the cause
        failure = write_error(weights, error)
        tmp.unlink(missing_ok=True)
        raise failure from error
    for module in model.modules():
        if isinstance(module, RebuiltBy):
            model_config = module.rebuild_config(model_config)
    rebuild = {**OmegaConf.to_container(model_config, resolve=True), "num_labels": num_labels}
    OmegaConf.save(OmegaConf.create(rebuild), folder / MODEL_CONFIG)
    save_hf_extras(model, tokenizer, folder)
    (folder / structure.STRUCTURE).unlink(missing_ok=True)  # a re-run into the folder: no stale record
    if reference is not None and structure.differs(model, reference):
        structure.save(model, folder)
    return weights
