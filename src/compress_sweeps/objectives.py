"""What a task's model is trained on and scored by: the training loss of a batch and the evaluation metrics.

A task says what it predicts (`Kind.labels` in its declaration, compress_sweeps/kinds.py): one class per example
(`classes`: cross-entropy, accuracy, macro-F1) or the next token at every position (`tokens`: a causal LM's
shifted cross-entropy, perplexity). `objective_for(labels)` is the one place that maps the two, for the training
loop, evaluation and the pre-launch check of `optimized_metric`. `goal(metric)` says whether a metric is better
high or low: every report, Pareto front, sweeper and the planner's ranking of candidates asks it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from sklearn.metrics import f1_score

from compress_sweeps.kinds import kind_of

IGNORE = -100  # a label position that scores nothing (torch's cross_entropy default ignore_index)
Goal = Literal["maximize", "minimize"]


class Objective(Protocol):
    """The loss a model trains on and the metrics evaluation reports for one kind of prediction."""

    metrics: tuple[str, ...]  # what `scores` returns, its first entry the task's headline metric

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean training loss of one batch."""

    def scores(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """The metrics over (logits, labels) pairs of every evaluated batch."""

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """1.0 where a prediction is right, one row per example ([B] classes, [B, T-1] next tokens): a teacher's
        accuracy, cached per example."""


@dataclass(frozen=True)
class Classification:
    """One class per example: cross-entropy; accuracy, macro-F1, mean loss per example."""

    metrics: tuple[str, ...] = ("eval/accuracy", "eval/f1_macro", "eval/loss", "eval/examples")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(-1) == labels).float()

    def scores(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        predictions, truth, loss_sum = [], [], 0.0
        for logits, labels in batches:
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            predictions.append(logits.argmax(-1).cpu())
            truth.append(labels.cpu())
        y_pred, y_true = torch.cat(predictions), torch.cat(truth)
        return {
            "eval/accuracy": (y_pred == y_true).float().mean().item(),
            "eval/f1_macro": float(f1_score(y_true, y_pred, average="macro")),
            "eval/loss": loss_sum / len(y_true),
            "eval/examples": float(len(y_true)),
        }


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position t predicts token t+1: logits [B, T, V] and labels [B, T] -> [B*(T-1), V] and [B*(T-1)]."""
    return logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)


@dataclass(frozen=True)
class NextToken:
    """A causal LM: every position predicts the next token (labels are the input ids; IGNORE scores nothing).
    Loss and perplexity are per predicted token, over every token of the evaluated blocks."""

    metrics: tuple[str, ...] = ("eval/perplexity", "eval/loss", "eval/token_accuracy", "eval/tokens", "eval/examples")

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(*shifted(logits, labels), ignore_index=IGNORE)

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (logits[:, :-1].argmax(-1) == labels[:, 1:]).float()

    def scores(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        loss_sum, correct, tokens, examples = 0.0, 0, 0, 0
        for logits, labels in batches:
            flat_logits, flat_labels = shifted(logits.float(), labels)
            scored = flat_labels != IGNORE
            loss_sum += F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE, reduction="sum").item()
            correct += int((flat_logits.argmax(-1)[scored] == flat_labels[scored]).sum())
            tokens += int(scored.sum())
            examples += len(labels)
        loss = loss_sum / max(tokens, 1)
        return {
            "eval/perplexity": math.exp(min(loss, 700.0)),  # exp overflows a float past ~709
            "eval/loss": loss,
            "eval/token_accuracy": correct / max(tokens, 1),
            "eval/tokens": float(tokens),
            "eval/examples": float(examples),
        }


CLASSIFICATION, NEXT_TOKEN = Classification(), NextToken()
OBJECTIVES: dict[str, Objective] = {"classes": CLASSIFICATION, "tokens": NEXT_TOKEN}


def objective_for(labels: str) -> Objective:
    """The objective of a task whose declared `Kind.labels` is `labels`."""
    return OBJECTIVES[labels]


def objective_of(task: DictConfig) -> Objective:
    """The objective of what a task config's builder declares it gives (a builder that declares nothing: classes)."""
    given = kind_of(task)
    return CLASSIFICATION if given is None else objective_for(given.labels)


def headline(metrics: dict) -> str:
    """The headline metric of a run's metrics: its objective's first (eval/accuracy, eval/perplexity)."""
    found = [o.metrics[0] for o in OBJECTIVES.values() if o.metrics[0] in metrics]
    return found[0] if found else CLASSIFICATION.metrics[0]


def short(metric: str) -> str:
    """`eval/perplexity` -> `perplexity`: a metric's name in table columns and axis labels."""
    return metric.rsplit("/", 1)[-1]


LOWER_IS_BETTER = ("loss", "perplexity", "latency", "size_bytes", "params", "flops")  # parts of a metric's name
SECONDS = ("_s", "_ms")  # ends of a duration's name (train_s, latency_ms); not examples_per_s


def goal(metric: str) -> Goal:
    """Whether a logged metric (`eval/perplexity`, `compression/latency_ms`, ...) is better high or low."""
    name = metric.rsplit("/", 1)[-1]
    lower = any(part in name for part in LOWER_IS_BETTER) or (name.endswith(SECONDS) and "_per_" not in name)
    return "minimize" if lower else "maximize"
