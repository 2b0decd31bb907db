"""Small models and helpers for the slimming tests (test_slim.py, test_slim_channels.py)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from compress_sweeps.hooks import RunContext
from compress_sweeps.pruners.criteria import Magnitude
from compress_sweeps.pruners.slim import SlimPruner
from compress_sweeps.run.shapes import structure_report

TEXT_KEYS = ("input_ids", "attention_mask")


def bert(heads: int = 4, layers: int = 3, hidden: int = 32, ffn: int = 64) -> nn.Module:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=40,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=32,
        num_labels=3,
    )
    return BertForSequenceClassification(config).eval()


def tokens(batch: int = 4, length: int = 12) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 8:] = 0  # padding: the attention mask must survive slimming too
    return {"input_ids": torch.randint(5, 40, (batch, length)), "attention_mask": mask}


def context(inputs: dict[str, torch.Tensor], keys=TEXT_KEYS, total_steps: int = 10) -> RunContext:
    rows = [{k: inputs[k][0] for k in keys} | {"labels": torch.tensor(0)}]
    return RunContext(total_steps, 3, torch.device("cpu"), input_keys=keys, train_set=rows)


def slim_pruner(**kwargs) -> SlimPruner:
    return SlimPruner(**({"criterion": Magnitude} | kwargs))


def oneshot(model: nn.Module, inputs, keys=TEXT_KEYS, **kwargs) -> SlimPruner:
    pruner = slim_pruner(**({"start_step": 0, "end_step": 0} | kwargs))
    pruner.attach(model, context(inputs, keys))
    return pruner


def measured(slim: nn.Module, dense: nn.Module, pruner: SlimPruner) -> dict:
    """What run/measure records for the finalized model against the dense one (counted from the modules)."""
    promise = pruner.spec().structure
    return structure_report(slim, dense, [promise], {})


def logits(model: nn.Module, inputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out
