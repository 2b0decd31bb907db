"""A frozen teacher: any `model` config (or a previous run's folder), optionally fine-tuned once on the task.

A pretrained encoder with a fresh head teaches nothing, so a teacher can be fine-tuned on the run's training split
before distillation starts. That fine-tuning is done once per (teacher config, task data, trainer settings, seed):
the result is saved as a run-like folder (`model.safetensors` + `model_config.yaml`) under
`<cache_dir>/teachers/`, and every later job of a sweep loads it instead of training the teacher again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import torch
from omegaconf import OmegaConf
from pydantic import Field
from torch import nn

from compress_sweeps import distributed
from compress_sweeps.errors import ConfigError
from compress_sweeps.hooks import Compressors, FineTuner, RunContext
from compress_sweeps.loggers import NullLogger
from compress_sweeps.models.runs import WEIGHTS, from_run, save_model

log = logging.getLogger(__name__)


def describe(build: Callable[..., nn.Module]) -> dict:
    """A model builder (a `functools.partial` from Hydra's `_partial_: true`) as a config that rebuilds it."""
    func, keywords = (build.func, dict(build.keywords)) if isinstance(build, functools.partial) else (build, {})
    return {"_target_": f"{func.__module__}.{func.__qualname__}", **keywords}


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes: the identity of a set of weights."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Teacher:
    """One teacher of a distiller: how to build it, its weight among several teachers, how to fine-tune it first.

    `model` is a builder called with `num_labels` (a model config with `_partial_: true`, e.g. `minilm`, or
    `compress_sweeps.models.from_run` with a run folder). `finetune` is a training loop (a `trainer` config, see
    `hooks.FineTuner`); null uses the weights as built.
    """

    def __init__(
        self,
        model: Callable[..., nn.Module],
        weight: Annotated[float, Field(ge=0)] = 1.0,
        finetune: FineTuner | None = None,
        finetune_seed: int = 0,
    ) -> None:
        if not callable(model):
            raise ConfigError("distiller.teachers.<name>.model", model, "must be a model config with _partial_: true")
        if weight < 0:
            raise ConfigError("distiller.teachers.<name>.weight", weight, "must be >= 0")
        self.build, self.weight, self.finetune, self.finetune_seed = model, weight, finetune, finetune_seed
        self.key = "distiller.teacher"  # the config key of this teacher, set by its distiller (for errors)
        self.module: nn.Module | None = None
        self.forward_passes = 0  # counted so a sweep can show the output cache saving teacher work

    def load(self, context: RunContext, data_digest: str) -> nn.Module:
        """Build (and fine-tune once, or load the fine-tuned copy), move to the device, freeze, switch to eval."""
        # a private RNG stream: whether the teacher was trained or loaded from disk must not change the student
        devices = [context.device] if context.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.finetune_seed)
            try:
                if self.finetune is None:
                    model = self.build(num_labels=context.num_labels)
                else:
                    model = self._finetuned(context, data_digest)
            except ConfigError as error:  # e.g. a previous run's head with another label set: name this teacher
                raise (error.under(f"{self.key}.") if error.key.startswith("model.") else error) from None
        model.to(context.device).eval().requires_grad_(False)
        self.module = model
        return model

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> Any:
        """One frozen forward pass (eval mode, no autograd graph)."""
        if self.module is None:
            raise RuntimeError("Teacher.load(...) must run before the teacher is called")
        self.forward_passes += 1
        with torch.no_grad():
            return self.module(**inputs)

    def digest(self) -> str:
        """Identity of the loaded weights: part of the key of cached teacher outputs."""
        return tensors_digest(self.module.state_dict())

    def _finetuned(self, context: RunContext, data_digest: str) -> nn.Module:
        settings = self.finetune.settings()
        key = repr((describe(self.build), context.task_name, data_digest, settings, self.finetune_seed))
        folder = Path(context.cache_dir or ".").expanduser() / "teachers"
        folder = folder / f"{context.task_name or 'task'}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        # rank 0 decides for all ranks: they fine-tune together (each on its shard) or all load
        if not distributed.on_rank_zero((folder / WEIGHTS).is_file):
            model = self.build(num_labels=context.num_labels)
            train_set, steps = context.train_set, self.finetune.total_steps(len(context.train_set))
            log.info("teacher: fine-tuning once for %d steps -> %s", steps, folder)
            own = RunContext(**{**vars(context), "total_steps": steps})
            self.finetune.fit(model, train_set, train_set, Compressors([]), own, NullLogger(), seed=self.finetune_seed)
            if distributed.is_main():
                _save_once(model, folder, describe(self.build), context.num_labels)
            distributed.barrier()  # the other ranks load rank 0's copy below
        else:
            log.info("teacher: reusing the fine-tuned teacher in %s", folder)
        return from_run(str(folder), context.num_labels)


def _save_once(model: nn.Module, folder: Path, config: dict, num_labels: int) -> None:
    """Write into a temp folder, then rename: parallel jobs never read a half-written teacher."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        save_model(model, tmp, None, OmegaConf.create(config), num_labels)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / WEIGHTS).is_file():  # another job won the race only if its copy is complete
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
