"""Periodic training checkpoints in the run folder, and resuming from them: no lost work after a kill.

`<run folder>/checkpoint/last.pt` holds everything the rest of the run depends on: the model's state dict, the
optimizer and LR scheduler, the step, the data order (see `EpochBatches`), the Python / NumPy / torch (CPU and
CUDA) RNG states, each compressor's Python-side state (masks, scores, observers, shadow weights; the optional
`state_dict` / `load_state_dict` pair of hooks.py) and the config id (`run.identity.job_id`). It is written to a
temp file and renamed over the previous one, so a kill at any moment leaves either the old or the new checkpoint.

A run that finds a checkpoint of its own config id (and no completed results.json) restores it after the
compressors attached and continues at the next step; on CPU the finished run equals an uninterrupted one exactly.
A checkpoint of another config is ignored with a warning (the run starts fresh and overwrites it later). The
checkpoint is deleted once the run completed (results.json says so first); a failed or killed run keeps it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from compress_sweeps.errors import write_error
from compress_sweeps.hooks import Compressors
from compress_sweeps.run.artifacts import RESULTS

FOLDER = "checkpoint"
LAST = "last.pt"
FORMAT = 1  # bump when the layout changes: an older checkpoint then starts the run fresh

log = logging.getLogger(__name__)


class EpochBatches:
    """Shuffled micro-batches forever, one `make_loader(epoch)` DataLoader per epoch, resumable exactly.

    The state is the data generator's state at the start of the current epoch plus the number of micro-batches
    taken from it. Resuming restores that generator state, re-creates the epoch's DataLoader (which draws the same
    permutation from it) and fast-forwards past the batches already taken, so the order continues identically
    whatever the DataLoader draws internally. The fast-forward loads at most one epoch of batches (no compute).
    """

    def __init__(self, make_loader: Callable[[int], DataLoader], generator: torch.Generator) -> None:
        self.make_loader, self.generator = make_loader, generator
        self.epoch, self.taken = -1, 0
        self.epoch_start = generator.get_state()
        self._batches: Iterator | None = None

    def __iter__(self) -> EpochBatches:
        return self

    def __next__(self) -> Any:
        while True:
            if self._batches is None:
                self.epoch, self.taken = self.epoch + 1, 0
                self.epoch_start = self.generator.get_state()
                self._batches = iter(self.make_loader(self.epoch))
            try:
                batch = next(self._batches)
            except StopIteration:
                self._batches = None
                continue
            self.taken += 1
            return batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "taken": self.taken, "epoch_start": self.epoch_start.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.taken, self._batches = state["epoch"], 0, None
        if self.epoch < 0:  # saved before the first batch
            self.generator.set_state(state["epoch_start"])
            return
        self.epoch_start = state["epoch_start"].clone()
        self.generator.set_state(self.epoch_start)
        self._batches = iter(self.make_loader(self.epoch))
        for _ in range(state["taken"]):
            next(self._batches)
        self.taken = state["taken"]


def rng_states() -> dict[str, Any]:
    """Every global generator a run draws from (plain lists and tensors, loadable with `weights_only=True`)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class TrainingState:
    """The live objects of one `Trainer.fit`, captured into and restored from one checkpoint dict."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        batches: EpochBatches,
        compressors: Compressors,
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.batches, self.compressors = batches, compressors

    def state_dict(self, step: int) -> dict[str, Any]:
        return {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "batches": self.batches.state_dict(),
            "compressors": self.compressors.state_dict(),
            "rng": rng_states(),  # last: nothing above draws random numbers
        }

    def load_state_dict(self, state: dict[str, Any]) -> int:
        """Restore everything (the compressors after the model, whose parameters they hold); return the step."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.compressors.load_state_dict(state["compressors"])
        self.batches.load_state_dict(state["batches"])
        set_rng_states(state["rng"])
        return int(state["step"])


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """torch.save into a temp file in the same folder, fsync, rename: a kill never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        failure = write_error(path, error) if isinstance(error, OSError | RuntimeError) else None
        Path(tmp).unlink(missing_ok=True)
        if failure is not None:  # name the cause (disk full, size limit), not the serializer's internals
            raise failure from error
        raise


class Checkpoints:
    """The checkpoint of one run folder: `resume` at the start of training, `save` when the trainer says so.

    `resumed_from` is the step a run continued from (None for a fresh start), for results.json. Resuming does not
    depend on `trainer.checkpoint_every`: with checkpoints off, a run still continues from one an earlier attempt
    left.
    """

    def __init__(self, run_dir: str | Path, config_id: str) -> None:
        self.run_dir, self.config_id = Path(run_dir), config_id
        self.path = self.run_dir / FOLDER / LAST
        self.resumed_from: int | None = None

    def load(self) -> dict[str, Any] | None:
        """This run's checkpoint, or None (with a warning when one exists but must not be resumed)."""
        if not self.path.is_file():
            return None
        if self._completed():
            log.warning("%s holds a completed run; starting fresh, not resuming it", self.run_dir)
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file means: start fresh, say why
            log.warning("cannot read %s (%s: %s); starting fresh", self.path, type(error).__name__, error)
            return None
        if state.get("format") != FORMAT or state.get("config_id") != self.config_id:
            log.warning(
                f"{self.path} belongs to config id {state.get('config_id')} (format {state.get('format')}), not to "
                f"this run's {self.config_id} (format {FORMAT}); starting fresh"
            )
            return None
        return state

    def resume(self, training: TrainingState) -> int:
        """Restore the checkpoint into `training` if there is one of this config; return the step to continue after."""
        state = self.load()
        if state is None:
            return 0
        self.resumed_from = training.load_state_dict(state["training"])
        log.info("resumed from checkpoint at step %d (%s)", self.resumed_from, self.path)
        return self.resumed_from

    def save(self, step: int, training: TrainingState) -> None:
        state = {"format": FORMAT, "config_id": self.config_id, "training": training.state_dict(step)}
        save_atomic(state, self.path)

    def remove(self) -> None:
        """Drop the checkpoint of a completed run (it can be as large as three models: weights + AdamW moments)."""
        self.path.unlink(missing_ok=True)
        if self.path.parent.is_dir() and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()

    def _completed(self) -> bool:
        try:
            results = json.loads((self.run_dir / RESULTS).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        return results.get("status") == "completed" and results.get("job_id") == self.config_id
