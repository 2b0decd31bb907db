"""One job, top to bottom: seed -> task -> model -> compressors -> fit -> finalize -> measure -> save and log."""

from __future__ import annotations

import time
import traceback
from functools import partial
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from compress_sweeps import artifacts, distributed, measure
from compress_sweeps.checkpoint import Checkpoints
from compress_sweeps.checks import check_config
from compress_sweeps.errors import describe
from compress_sweeps.hooks import Compressors, RunContext, Structured
from compress_sweeps.loggers import NullLogger, RunLogger
from compress_sweeps.models import tokenizer_for
from compress_sweeps.quantizers.export import int8_export_report, wants_int8_export
from compress_sweeps.seeding import seed_everything
from compress_sweeps.sweeps.jobs import job_id
from compress_sweeps.sweeps.threads import set_threads
from compress_sweeps.verify import failures, verify


def run(cfg: DictConfig) -> float:
    """Train and compress one model as `cfg` says; leave results.json (also on failure) and model.safetensors."""
    run_dir = Path(cfg.paths.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    results: dict = {"status": "running", "error": None, "seed": cfg.seed, "job_id": job_id(cfg)}
    results |= {"metrics": {}, "compression": {}}
    checkpoints = Checkpoints(run_dir, results["job_id"])  # resume from / save to <run_dir>/checkpoint/last.pt
    timing: dict[str, float] = {}
    logger: RunLogger = NullLogger()
    started = time.perf_counter()
    try:
        logger = instantiate(cfg.logger) if distributed.is_main() else NullLogger()  # one W&B run per job
        logger.start(config, run_dir)
        seed_everything(cfg.seed)
        results["threads"] = set_threads(cfg.threads)
        # every check that needs no data and no model: a bad value fails before any loading; the trainer and the
        # compressors it built and checked are the run's own
        parts = check_config(cfg)
        trainer = parts["trainer"]
        task = instantiate(cfg.task)
        model = instantiate(cfg.model, num_labels=task.num_labels)
        tokenizer = tokenizer_for(model)
        train_set, eval_set = task.datasets(tokenizer)
        compressors = Compressors(parts[group] for group in ("pruner", "quantizer", "distiller"))
        context = RunContext(
            total_steps=trainer.total_steps(len(train_set)),
            num_labels=task.num_labels,
            device=trainer.device,
            input_keys=task.input_keys,
            train_set=train_set,
            eval_set=eval_set,
            task_name=task.name,
            cache_dir=cfg.paths.cache_dir,
        )
        timing["setup_s"] = time.perf_counter() - started
        trainer.fit(model, train_set, eval_set, compressors, context, logger, seed=cfg.seed, checkpoints=checkpoints)
        timing["train_s"] = time.perf_counter() - started - timing["setup_s"]
        if distributed.active():  # masks, observers, buffers and weights must agree on every rank
            results["distributed"] = distributed.check_state(model, compressors)
            if not results["distributed"]["state_identical"]:
                raise RuntimeError(f"ranks disagree on {results['distributed']['differing']}")
        model = compressors.finalize(model)
        metrics = trainer.evaluate(model, eval_set, task.input_keys)
        logger.log(metrics, step=context.total_steps)  # the finalized model's scores end the W&B history too
        # a pruner names the weights it pruned and their pattern; the report re-counts both from the weights
        patterns = next((m.layer_patterns() for m in compressors.members if hasattr(m, "layer_patterns")), None)
        compression = measure.measure(model, eval_set[0], task.input_keys, patterns=patterns)
        for member in compressors.members:  # heads / widths / blocks / channels kept, and the cost before and after
            if isinstance(member, Structured):
                compression["structure"] = member.structure()
        if backend := wants_int8_export(compressors.members):  # the real int8 model, evaluated and timed vs this one
            evaluate = partial(trainer.evaluate, eval_set=eval_set, input_keys=task.input_keys)
            folder = run_dir if distributed.is_main() else None
            compression["int8_export"] = int8_export_report(
                model, evaluate, eval_set, task.input_keys, metrics, backend=backend, folder=folder
            )
        if distributed.is_main():
            artifacts.save_model(model, run_dir, tokenizer, cfg.model, task.num_labels)
        results |= {"metrics": metrics | compressors.metrics(), "compression": compression}
        # re-counted from the saved files, not our bookkeeping (by rank 0, which wrote them)
        results["verified"] = distributed.on_rank_zero(verify, run_dir, cfg, results)
        if not results["verified"]["ok"]:
            raise RuntimeError(f"verification failed: {failures(results['verified'])}")
        results["status"] = "completed"
        value = objective(results, cfg.optimized_metric)
        shown = f"{value:.4f}" if isinstance(value, float) else ", ".join(f"{v:.4g}" for v in value)
        if distributed.is_main():
            print(f"{cfg.optimized_metric} = {shown}  (results: {run_dir / artifacts.RESULTS})")
        return value
    except BaseException as error:
        results |= {
            "status": "failed",
            "error": describe(error),
            "traceback": traceback.format_exc(),
        }
        if distributed.world_size() > 1:
            results["failed_rank"] = distributed.rank()
        raise
    finally:
        timing["total_s"] = time.perf_counter() - started
        results["timing"] = timing
        results["resumed_from_step"] = checkpoints.resumed_from  # null: trained from step 1
        if distributed.is_main() or results["status"] == "failed":  # a failing rank > 0 stops rank 0 too
            artifacts.write_json_atomic(run_dir / artifacts.RESULTS, results)
        if results["status"] == "completed" and distributed.is_main():  # after results.json: never resumed
            checkpoints.remove()
        logger.finish(results, exit_code=0 if results["status"] == "completed" else 1)


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
