"""A model fine-tuned once on the task and cached: what post-training methods compress, and a distiller's teacher.

One-shot pruning and static int8 calibration preserve what a trained model computes, and the bundled MiniLM comes
with a new, random classification head. `finetuned` (conf/model/finetuned.yaml) fine-tunes any model config on
the run's task first, once per (model config, encoded training data, fine-tuning settings, seed): the result is
saved as a run-like folder (`model.safetensors` + `model_config.yaml`) under `<cache_dir>/finetuned/`, and every
later job of a sweep loads it instead of training again. A distiller's teacher (distillers/teacher.py) is
fine-tuned by the same `finetune_once`, into the same cache, so a teacher and a student starting point with equal
settings are trained once. The fine-tuning is a `hooks.FineTuner` (the training loop, built from a `trainer`
config), so this package never imports the loop.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import torch
from omegaconf import DictConfig, OmegaConf
from pydantic import Field
from torch import nn

from compress_sweeps import distributed, kinds
from compress_sweeps.batching import dataset_digest
from compress_sweeps.hooks import Compressors, FineTuner, RunContext
from compress_sweeps.models.hf import tokenizer_for
from compress_sweeps.models.runs import WEIGHTS, from_run, save_model
from compress_sweeps.models.settings import Labels

CACHE = "finetuned"  # <cache_dir>/finetuned/<task>-<hash>: one folder per fine-tuned model
log = logging.getLogger(__name__)


class _Silent:
    """The fine-tuning logs nothing of its own (a run's logger is the run's; models may not import loggers)."""

    def log(self, values: dict[str, float], step: int) -> None:
        pass


def describe(build: Callable[..., nn.Module]) -> dict:
    """A model builder (a `functools.partial` from Hydra's `_partial_: true`) as a config that rebuilds it."""
    func, keywords = (build.func, dict(build.keywords)) if isinstance(build, functools.partial) else (build, {})
    return {"_target_": f"{func.__module__}.{func.__qualname__}", **keywords}


def finetune_once(
    build: Callable[..., nn.Module],
    finetune: FineTuner,
    seed: int,
    context: RunContext,
    data_digest: str,
    built: nn.Module | None = None,
) -> nn.Module:
    """`build(num_labels=...)` fine-tuned by `finetune` on `context.train_set`, or the copy an earlier job cached.

    The cache key is (the builder's config, the task name, `data_digest` of the encoded training split, the
    fine-tuning settings, `seed`); `built` is a model `build` already made (it is trained when nothing is cached).
    Either way the model comes back loaded from the cache folder, so a cached and a fresh model are the same
    object state. The caller seeds and forks the RNG (the run's own random stream must not depend on the cache).
    """
    settings = finetune.settings()
    key = repr((describe(build), context.task_name, data_digest, settings, seed))
    folder = Path(context.cache_dir or ".").expanduser() / CACHE
    folder = folder / f"{context.task_name or 'task'}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    # rank 0 decides for all ranks: they fine-tune together (each on its shard) or all load
    if not distributed.on_rank_zero((folder / WEIGHTS).is_file):
        model = built if built is not None else build(num_labels=context.num_labels)
        train_set = context.train_set
        steps = finetune.total_steps(len(train_set))
        log.info("fine-tuning %s once for %d steps -> %s", describe(build)["_target_"], steps, folder)
        own = replace(context, total_steps=steps)
        eval_set = context.eval_set if context.eval_set is not None else train_set
        finetune.fit(model, train_set, eval_set, Compressors([]), own, _Silent(), seed=seed)
        if distributed.is_main():
            _save_once(model, folder, describe(build), context.num_labels)
        distributed.barrier()  # the other ranks load rank 0's copy below
    else:
        log.info("reusing the fine-tuned model in %s", folder)
    return from_run(str(folder), context.num_labels)


def _save_once(model: nn.Module, folder: Path, config: dict, num_labels: int) -> None:
    """Write into a temp folder, then rename: parallel jobs never read a half-written model."""
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


def _check_inner(model: DictConfig, prefix: str) -> list[str]:
    return kinds.precheck(model.model, f"{prefix}model.")


@kinds.builds("model", like=lambda node: node.model, precheck=_check_inner)
def finetuned(
    model: Callable[..., nn.Module],
    task: Any,
    finetune: FineTuner,
    num_labels: Labels,
    seed: Annotated[int, Field(ge=0)] = 0,
    cache_dir: str | None = None,
) -> nn.Module:
    """`model` (a model config with `_partial_: true`) fine-tuned once on `task`'s training split by `finetune`
    (a trainer config) with `seed`, cached under `cache_dir` and shared by every job with the same settings.

    `task` is the run's task (`${task}` in the config): its splits are encoded with the model's tokenizer. The
    run's random stream is untouched: the fine-tuning draws from its own generator seeded by `seed`, whether it
    trains or loads from the cache.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        built = model(num_labels=num_labels)
        train_set, eval_set = task.datasets(tokenizer_for(built))
        context = RunContext(
            total_steps=0,  # set from `finetune` when it trains
            num_labels=num_labels,
            device=torch.device("cpu"),  # unused: no compressor attaches; the fine-tuning moves the model itself
            input_keys=task.input_keys,
            train_set=train_set,
            eval_set=eval_set,
            task_name=task.name,
            cache_dir=cache_dir,
        )
        digest = dataset_digest(train_set, task.input_keys)
        return finetune_once(model, finetune, seed, context, digest, built)
