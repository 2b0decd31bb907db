"""Models: each config in conf/model/ points at one of these builders; all return a plain `nn.Module`.

Before anything loads, the pre-launch pass checks a model config's values against its builder's signature
(schema.py) and asks this package the rest: `modality` (the inputs the model takes, to match the task) and
`precheck` (a previous run's folder must hold a saved model, with its shape record when it was slimmed; a local
model path must be a model folder that exists). `rebuild_config` is the config a run folder saves to rebuild its
model (a fine-tuned model's architecture, without its data and training).
"""

from __future__ import annotations

import typing

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel

from compress_sweeps.errors import ConfigError
from compress_sweeps.models.cnn import ConvNet
from compress_sweeps.models.finetuned import finetuned
from compress_sweeps.models.hf import (
    check_model_source,
    check_no_structure,
    minilm,
    pretrained_classifier,
    student_from_teacher,
    tokenizer_for,
)
from compress_sweeps.models.runs import from_run, saved_config
from compress_sweeps.models.untrained import untrained_parameters

__all__ = [
    "ConvNet",
    "finetuned",
    "from_run",
    "is_model",
    "minilm",
    "modality",
    "precheck",
    "pretrained_classifier",
    "rebuild_config",
    "student_from_teacher",
    "tokenizer_for",
    "untrained_parameters",
]


BUILDERS = (ConvNet, minilm, pretrained_classifier, student_from_teacher, from_run, finetuned)


def is_model(node: DictConfig) -> bool:
    """Whether a config node builds one of this package's models (the run's model, or a teacher)."""
    try:
        return get_object(str(node._target_)) in BUILDERS
    except Exception:
        return False


def modality(model: DictConfig) -> str | None:
    """`text` (a Hugging Face model with a tokenizer) or `images` (the CNN); None for a target that is not a model
    builder of this package (then nothing is assumed)."""
    target = get_object(str(model._target_))
    if target is finetuned:
        return modality(model.model)
    if target is from_run:
        return modality(saved_config(str(model.folder))) if "folder" in model else None
    if isinstance(target, type):
        return "images" if issubclass(target, ConvNet) else None
    returns = typing.get_type_hints(target).get("return") if str(model._target_).startswith(__name__) else None
    return "text" if returns is PreTrainedModel else None


def precheck(model: DictConfig, prefix: str) -> None:
    """A model that starts from a previous run's folder needs the saved model there, and a Hugging Face folder must
    be what its config.json describes (not a slimmed run); `prefix` is the config path of the model node (`model.`,
    `distiller.teachers.main.model.`), for the error."""
    target = get_object(str(model._target_))
    if target is finetuned:
        precheck(model.model, f"{prefix}model.")
    if target is pretrained_classifier and "name_or_path" in model:
        check_model_source(str(model.name_or_path), f"{prefix}name_or_path")
        check_no_structure(str(model.name_or_path), f"{prefix}name_or_path")
    if target is student_from_teacher and model.get("teacher") is not None:
        check_model_source(str(model.teacher), f"{prefix}teacher")
    if target is from_run and "folder" in model:
        try:
            saved_config(str(model.folder))
        except ConfigError as error:  # saved_config names `model.folder`: put it where this node lives
            raise error.under(prefix.removesuffix("model.")) from None


def rebuild_config(model: DictConfig) -> DictConfig:
    """The config a run folder saves to rebuild its model (`model_config.yaml`, read by `from_run`): the model's own
    config, except that a fine-tuned model is rebuilt from its architecture alone (no task data, no training)."""
    if get_object(str(model._target_)) is finetuned:
        inner = OmegaConf.to_container(model.model, resolve=True)
        inner.pop("_partial_", None)
        return OmegaConf.create(inner)
    return model
