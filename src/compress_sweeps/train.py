"""One job, top to bottom: check -> seed -> task -> model -> fit -> finalize -> measure -> export -> save -> verify."""

from __future__ import annotations

from functools import partial

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from tqdm.contrib.logging import logging_redirect_tqdm

from compress_sweeps import distributed
from compress_sweeps.hooks import RunContext
from compress_sweeps.models import rebuild_config, tokenizer_for, untrained_parameters
from compress_sweeps.models.hf import from_pretrained_rebuilds
from compress_sweeps.models.runs import save_model
from compress_sweeps.run import artifacts, measure
from compress_sweeps.run.build import build, check
from compress_sweeps.run.record import RunRecord
from compress_sweeps.run.seeding import seed_everything
from compress_sweeps.run.threads import set_threads


def run(cfg: DictConfig) -> float | tuple[float, ...]:
    """Train and compress one model as `cfg` says; leave results.json (also on failure) and model.safetensors."""
    with RunRecord(cfg) as record:
        parts = build(cfg)  # every setting checked before anything is loaded, seeded or logged
        record.warn(check(parts, cfg))
        record.start_logger(parts.logger)
        seed_everything(cfg.seed)
        record.results["threads"] = set_threads(cfg.threads)
        task = instantiate(cfg.task)
        model = instantiate(cfg.model, num_labels=task.num_labels)
        tokenizer = tokenizer_for(model)
        train_set, eval_set = task.datasets(tokenizer)
        context = RunContext(
            total_steps=parts.trainer.total_steps(len(train_set)),
            num_labels=task.num_labels,
            device=parts.trainer.device,
            input_keys=task.input_keys,
            train_set=train_set,
            eval_set=eval_set,
            task_name=task.name,
            cache_dir=cfg.paths.cache_dir,
            untrained=untrained_parameters(model),  # a new head: post-training methods say so
            objective=parts.objective,
        )
        record.results["optimizer_steps"] = context.total_steps  # 0: compressed without training (one-shot)
        record.lap("setup_s")
        fit = partial(parts.trainer.fit, seed=cfg.seed, checkpoints=record.checkpoints)
        with logging_redirect_tqdm():  # log lines print above the progress bar instead of through it
            fit(model, train_set, eval_set, parts.compressors, context, record.logger)
        record.lap("train_s")
        record.check_ranks(model, parts.compressors)  # torchrun: weights, masks and method state agree on all ranks
        model = parts.compressors.finalize(model)
        evaluate = partial(
            parts.trainer.evaluate, eval_set=eval_set, input_keys=task.input_keys, objective=parts.objective
        )
        metrics = evaluate(model)
        record.logger.log(metrics, step=context.total_steps)  # the finalized model's scores end the W&B history
        specs = parts.compressors.specs()  # what each method promises; measured here, checked by verify
        dense = reference(cfg, task.num_labels, context.device)  # speeds and shapes are measured against it
        compression = measure.measure(model, eval_set, task.input_keys, specs, dense, cfg.measure_latency)
        folder = record.run_dir if distributed.is_main() else None
        exported = parts.export(
            model,
            evaluate,
            eval_set,
            task.input_keys,
            metrics,
            folder,
            train_set=train_set,
            reference=dense,
            timed=cfg.measure_latency,
        )
        if exported is not None:
            compression["int8_export"] = exported
        if (rebuilds := from_pretrained_rebuilds(model)) is not None:  # the folder's config.json says the shapes
            compression["hf_from_pretrained"] = rebuilds
        if distributed.is_main():
            save_model(model, record.run_dir, tokenizer, rebuild_config(cfg.model), task.num_labels, reference=dense)
        record.complete(metrics | parts.compressors.metrics(), compression)
    value = objective(record.results, cfg.optimized_metric)
    if distributed.is_main():
        shown = f"{value:.4f}" if isinstance(value, float) else ", ".join(f"{v:.4g}" for v in value)
        print(f"{cfg.optimized_metric} = {shown}  (results: {record.run_dir / artifacts.RESULTS})")
    return value


def reference(cfg: DictConfig, num_labels: int, device: torch.device) -> nn.Module:
    """The dense model of the run's architecture, rebuilt fresh from the model config the run folder saves (outside
    the run's RNG stream; a fine-tuned model's architecture without its fine-tuning): what every speed ratio and
    shape change of the finalized model is measured against."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return instantiate(rebuild_config(cfg.model), num_labels=num_labels).to(device).eval()


def objective(results: dict, optimized_metric: str | list[str]) -> float | tuple[float, ...]:
    """The value(s) a sweeper optimizes: 'eval/accuracy' etc. from metrics, 'compression/<key>' from compression.

    A list (e.g. [eval/accuracy, compression/size_bytes]) gives a tuple, for multi-objective sweepers.
    """
    keys = [optimized_metric] if isinstance(optimized_metric, str) else list(optimized_metric)
    values = []
    for key in keys:
        section, _, name = key.partition("/")
        source = results["compression"] if section == "compression" else results["metrics"]
        lookup = name if section == "compression" else key
        if lookup not in source:
            known = [f"compression/{k}" for k in results["compression"]] + list(results["metrics"])
            raise ValueError(f"optimized_metric '{key}' is not measured by this run; known: {known}")
        values.append(float(source[lookup]))
    return values[0] if isinstance(optimized_metric, str) else tuple(values)
