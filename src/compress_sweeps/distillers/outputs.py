"""What the teachers say about a training batch: read from the on-disk cache, or from a live forward pass."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

from compress_sweeps.batching import dataset_digest
from compress_sweeps.distillers.cache import Outputs, TeacherOutputCache, TokenAxes
from compress_sweeps.distillers.teacher import Teacher
from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import RunContext, logits_of

# (teacher, model inputs) -> named teacher outputs (logits, hidden states...) for that batch
Extract = Callable[[Teacher, Mapping[str, torch.Tensor]], Outputs]
V = TypeVar("V")  # a metric value: a float, or a tensor still to be averaged


def per_teacher(metric: str, values: Mapping[str, V]) -> dict[str, V]:
    """{metric: value} for a single teacher, {metric_<name>: value} per teacher when there are several."""
    if len(values) == 1:
        return {metric: next(iter(values.values()))}
    return {f"{metric}_{name}": value for name, value in values.items()}


def check_trains(total_steps: int, how: str = "") -> None:
    """A distiller's term acts only through training steps: a run of 0 steps (trainer=none) cannot distil (`how`
    is unused: only trainer.max_steps=0 gives 0 steps, epochs give at least one)."""
    if total_steps == 0:
        raise ConfigError(
            "trainer.max_steps",
            0,
            "must be >= 1 with a distiller (its loss acts only in training steps), or use distiller=none",
            problem="trains nothing",
        )


class TeacherOutputs:
    """Loads every teacher at attach time and answers `outputs(batch) -> {teacher name -> Outputs}`.

    With `cache=True` each teacher runs once over the whole training split (or not at all when a previous job
    already did) and batches are answered by example `idx`, so a sweep over temperatures or alphas pays for the
    teacher once. `tag` names what `extract` returns; it is part of the cache key. `token_axes` names the outputs
    with token axes (hidden states, attention maps), which the cache fits to the width of each padded batch.
    """

    def __init__(self, teachers: Mapping[str, Teacher], cache: bool, cache_max_mb: float, batch_size: int) -> None:
        if not teachers:
            raise ConfigError("distiller.teachers", {}, "must name at least one teacher", problem="is empty")
        if cache_max_mb <= 0:
            raise ConfigError("distiller.cache_max_mb", cache_max_mb, "must be > 0")
        if batch_size < 1:
            raise ConfigError("distiller.cache_batch_size", batch_size, "must be an integer >= 1")
        self.teachers = dict(teachers)
        self.cache, self.max_bytes, self.batch_size = cache, cache_max_mb * 1e6, batch_size
        self.caches: dict[str, TeacherOutputCache | None] = {}
        self.input_keys: tuple[str, ...] = ()
        self.extract: Extract | None = None
        self.token_axes: dict[str, tuple[int, ...]] = {}
        self.accuracy: dict[str, float] = {}  # each teacher's validation accuracy, measured at attach

    @property
    def batch_keys(self) -> frozenset[str]:
        """Batch entries read besides the model inputs: the example `idx` the cache is indexed by."""
        return frozenset({"idx"}) if self.cache else frozenset()

    def attach(
        self,
        context: RunContext,
        extract: Extract,
        tag: str,
        on_load: Callable[[Teacher], None] | None = None,
        token_axes: TokenAxes | None = None,
    ) -> None:
        """Load the teachers (`on_load` then sets up hooks on each), then fill or read the cache."""
        self.input_keys, self.extract = tuple(context.input_keys), extract
        self.token_axes = {name: tuple(axes) for name, axes in (token_axes or {}).items()}
        # DataLoaders draw their base seed from the global RNG: isolate the teacher's work so the student's
        # dropout and data order are the same with or without the cache, and with or without a cache hit
        devices = [context.device] if context.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self._load_all(context, extract, tag, on_load)

    def _load_all(
        self, context: RunContext, extract: Extract, tag: str, on_load: Callable[[Teacher], None] | None
    ) -> None:
        needs_digest = self.cache or any(t.finetune is not None for t in self.teachers.values())
        data = dataset_digest(context.train_set, self.input_keys) if needs_digest else ""
        folder = Path(context.cache_dir or ".").expanduser() / "teacher_outputs" / (context.task_name or "task")
        for name, teacher in self.teachers.items():
            teacher.load(context, data)
            weights = teacher.digest() if self.cache or context.eval_set is not None else ""
            if context.eval_set is not None:  # how good the teacher is: the gap the student can hope to close
                self.accuracy[name] = self._accuracy(teacher, weights, context, folder)
            if on_load is not None:
                on_load(teacher)
            if not self.cache:
                continue
            key = hashlib.sha256(f"{weights}|{data}|{tag}".encode()).hexdigest()[:24]
            self.caches[name] = TeacherOutputCache.load_or_compute(
                folder,
                key,
                context.train_set,
                lambda batch, t=teacher: extract(t, self._inputs(batch, context.device)),
                self.batch_size,
                self.max_bytes,
                self.token_axes,
            )

    def _accuracy(self, teacher: Teacher, weights: str, context: RunContext, folder: Path) -> float:
        """The teacher's validation accuracy, computed once per (teacher weights, validation data) like its outputs:
        the per-example hits are cached, so the jobs of a sweep do not re-run the teacher over the eval split. Not
        counted in `forward_passes` (it trains no student)."""
        eval_digest = dataset_digest(context.eval_set, self.input_keys)
        key = hashlib.sha256(f"{weights}|{eval_digest}|eval-hits".encode()).hexdigest()[:24]

        @torch.no_grad()
        def hits(batch: Mapping[str, torch.Tensor]) -> Outputs:
            logits = logits_of(teacher.module(**self._inputs(batch, context.device)))
            return {"hits": context.objective.hits(logits.cpu(), batch["labels"].cpu())}  # next tokens: per position

        cache = TeacherOutputCache.load_or_compute(folder, key, context.eval_set, hits, self.batch_size)
        return float(cache.outputs["hits"].mean())

    def _inputs(self, batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        return {k: batch[k].to(device) for k in self.input_keys if k in batch}

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, Outputs]:
        """{teacher name -> outputs} for this batch (cached rows when available, else a live pass)."""
        device = batch["labels"].device
        width = batch["attention_mask"].shape[-1] if "attention_mask" in batch else None  # padded tokens per row
        answers = {}
        for name, teacher in self.teachers.items():
            cache = self.caches.get(name)
            if cache is not None:
                answers[name] = cache.lookup(batch["idx"], device, width)
            else:
                answers[name] = self.extract(teacher, self._inputs(batch, device))
        return answers

    def metrics(self) -> dict[str, float]:
        """`kd/teacher_accuracy` on the validation split (one per teacher, `kd/teacher_accuracy_<name>`, if several)."""
        return per_teacher("kd/teacher_accuracy", self.accuracy)

    @property
    def forward_passes(self) -> int:
        return sum(t.forward_passes for t in self.teachers.values())

    def state_dict(self) -> dict[str, int]:
        """Forward passes so far per teacher (a metric); the teachers themselves are rebuilt at attach."""
        return {name: teacher.forward_passes for name, teacher in self.teachers.items()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for name, teacher in self.teachers.items():
            teacher.forward_passes = state[name]

    def release(self) -> None:
        """Drop the teacher modules and cached tables once training is over (they can be large)."""
        for teacher in self.teachers.values():
            teacher.module = None
        self.caches.clear()
