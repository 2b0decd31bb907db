"""Models: each config in conf/model/ points at one of these builders; all return a plain `nn.Module`."""

from compress_sweeps.models.cnn import ConvNet
from compress_sweeps.models.hf import (
    minilm,
    new_parameters,
    pretrained_classifier,
    student_from_teacher,
    tokenizer_for,
)
from compress_sweeps.models.runs import from_run

__all__ = [
    "ConvNet",
    "from_run",
    "minilm",
    "new_parameters",
    "pretrained_classifier",
    "student_from_teacher",
    "tokenizer_for",
]
