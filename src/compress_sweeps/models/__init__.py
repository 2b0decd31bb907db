"""Models: each config in conf/model/ points at one of these builders; all return a plain `nn.Module`.

Before anything loads, the pre-launch pass checks a model config's values against its builder's signature
(schema.py) and asks the builder's own declaration (`@builds("model", ...)` beside it, compress_sweeps/kinds.py)
the rest: what it takes and predicts and its architecture family, to match the task, and its checks beyond value
types (a previous run's folder must hold a saved model, with its shape record when it was slimmed; a local model
path must be a model folder that exists). `rebuild_config` is the config a run folder saves to rebuild its model
(a fine-tuned model's architecture, without its data and training).
"""

from __future__ import annotations

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from compress_sweeps.models.causal import causal_lm, smollm2
from compress_sweeps.models.cnn import ConvNet
from compress_sweeps.models.finetuned import finetuned
from compress_sweeps.models.hf import minilm, pretrained_classifier, student_from_teacher, tokenizer_for
from compress_sweeps.models.runs import from_run
from compress_sweeps.models.untrained import untrained_parameters

__all__ = [
    "ConvNet",
    "causal_lm",
    "finetuned",
    "from_run",
    "minilm",
    "pretrained_classifier",
    "rebuild_config",
    "smollm2",
    "student_from_teacher",
    "tokenizer_for",
    "untrained_parameters",
]


def rebuild_config(model: DictConfig) -> DictConfig:
    """The config a run folder saves to rebuild its model (`model_config.yaml`, read by `from_run`): the model's own
    config, except that a fine-tuned model is rebuilt from its architecture alone (no task data, no training)."""
    if get_object(str(model._target_)) is finetuned:
        inner = OmegaConf.to_container(model.model, resolve=True)
        inner.pop("_partial_", None)
        return OmegaConf.create(inner)
    return model
