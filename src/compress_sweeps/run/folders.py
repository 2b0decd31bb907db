"""The folders a run reads and writes, checked before anything loads: every `paths.*` folder must be writable, and a
previous run folder the model starts from must hold a completed, verified run (and, when the run quantizes it while
training, one whose pruned zeros a method keeps)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from compress_sweeps.errors import ConfigError
from compress_sweeps.run.artifacts import RESULTS
from compress_sweeps.run.nodes import choice
from compress_sweeps.spec import CompressionSpec

PRUNED_SPARSITY = 0.01  # a starting model with more exact zeros than this counts as pruned


def check_paths(cfg: DictConfig) -> None:
    """The run's folder is Hydra's to choose; every other `paths.*` folder (the output root, the cache, any added
    one) must be a folder that can be created and written."""
    declared = OmegaConf.to_container(cfg.paths, resolve=False).get("output_dir")
    if declared != "${hydra:runtime.output_dir}":
        raise ConfigError(
            "paths.output_dir",
            declared,
            "must stay Hydra's job folder: choose it with hydra.run.dir=<folder> (one run) or hydra.sweep.dir=<folder> "
            "(a sweep, one subfolder per job)",
            problem="cannot be set",
        )
    for key in cfg.paths:
        if key != "output_dir" and cfg.paths[key] is not None:
            check_writable(f"paths.{key}", str(cfg.paths[key]))


def check_writable(key: str, folder: str) -> None:
    """`folder` (which may not exist yet) can be created and written: every existing part of it is a folder, and a
    folder can be made in the deepest existing one (tried and removed at once: permissions, a read-only mount or a
    virtual file system such as /proc or /sys refuse it, whoever the user is)."""
    path = Path(folder).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        problem = "is a file" if existing == path else f"lies under a file ({existing})"
        raise ConfigError(key, folder, "must be a folder that can be created and written", problem=problem)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=existing))
    except OSError as error:
        problem = "is read-only" if existing == path else "cannot be created"
        reason = error.strerror or type(error).__name__
        allowed = f"must be a folder that can be created and written ({existing}: {reason})"
        raise ConfigError(key, folder, allowed, problem=problem) from None


def starting_runs(model: DictConfig) -> Iterator[tuple[str, str, dict]]:
    """(key, folder, results.json) of every previous run folder the model config starts from (`model.folder` of
    model=from_run, `model.name_or_path` of model=hf pointing at a run folder, ...)."""
    for key, value in OmegaConf.to_container(model, resolve=True).items():
        if not isinstance(value, str) or key.startswith("_"):
            continue
        path = Path(value).expanduser() / RESULTS
        if path.is_file():
            try:
                yield f"model.{key}", value, json.loads(path.read_text())
            except json.JSONDecodeError:
                yield f"model.{key}", value, {"status": "unreadable"}


def check_starting_run(key: str, folder: str, results: dict) -> None:
    """A previous run used as a starting model must have completed and passed its verification."""
    status = results.get("status")
    verified = (results.get("verified") or {}).get("ok", status == "completed")
    if status != "completed" or not verified:
        state = status if status != "completed" else "unverified"
        raise ConfigError(
            key,
            folder,
            f"must be a run folder whose results.json says completed and verified (it says {state}: "
            f"{results.get('error') or 'see its results.json'})",
            problem=f"holds a {state} run",
        )


def check_pruned_start(cfg: DictConfig, specs: Sequence[CompressionSpec], key: str, folder: str, results: dict) -> None:
    """Quantization-aware training of a pruned starting model needs a method that keeps its zeros (pattern_lock),
    or training revives the pruned weights."""
    if not any(s.quantization for s in specs) or any(s.keeps_zeros for s in specs):
        return
    compression = results.get("compression") or {}
    sparsity, bits = float(compression.get("sparsity") or 0.0), compression.get("bits") or 32
    if compression.get("pattern") is None and (sparsity <= PRUNED_SPARSITY or bits < 16):
        return
    raise ConfigError(
        "pruner",
        choice(cfg, "pruner"),
        f"must keep the pruned zeros (pruner=pattern_lock) when quantizer={choice(cfg, 'quantizer')} trains the "
        f"pruned model in {key}={folder} (sparsity {sparsity:.2f}); otherwise training revives its pruned weights",
        problem="does not keep the pruned zeros",
    )
