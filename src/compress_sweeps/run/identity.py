"""Stable job identity: the same resolved config always gets the same id and the same folder in a sweep.

Folders are named from the job's overrides (readable) plus the id (unique), so re-launching a sweep into its
folder finds each finished job where it left it, jobs never share a folder, and a changed base config gets a new
folder instead of overwriting an old result.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from compress_sweeps import distributed
from compress_sweeps.run.artifacts import RESULTS

# What says where and how a job reports, not what it computes: left out of the job id, out of the readable part of
# the job folder name (Hydra's `override_dirname.exclude_keys`, via the `cs_identity_free` resolver), out of a
# fine-tuned teacher's cache key and out of the report's labels. `trainer.*` entries apply to every trainer config,
# the run's and a teacher's alike. Resuming is exact, so the checkpoint cadence never changes a result.
IDENTITY_FREE = ("hydra", "paths", "logger", "sweep", "trainer.progress", "trainer.checkpoint_every")
TRAINER_FREE = tuple(key.removeprefix("trainer.") for key in IDENTITY_FREE if key.startswith("trainer."))


def identity_free(key: str) -> bool:
    """Whether an override key (`logger.mode`, `trainer.progress`, `hydra.launcher.n_jobs`) is free of identity."""
    return any(key == free or key.startswith(f"{free}.") for free in IDENTITY_FREE)


def _without_trainer_free(tree: object) -> object:
    if isinstance(tree, dict):
        return {k: _without_trainer_free(v) for k, v in tree.items() if k not in TRAINER_FREE}
    if isinstance(tree, list):
        return [_without_trainer_free(v) for v in tree]
    return tree


def job_id(cfg: DictConfig) -> str:
    """12 hex digits of the SHA-256 of the resolved config without the identity-free keys."""
    identity = {
        key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if not identity_free(key)
    }
    blob = json.dumps(_without_trainer_free(identity), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def job_dir_name(override_dirname: str, *, _root_: DictConfig) -> str:
    """Resolver `${cs_job_dir:${hydra.job.override_dirname}}`: '<overrides, path-safe, <=80 chars>-<job id>'."""
    readable = re.sub(r"[^A-Za-z0-9=,._:+-]+", "_", override_dirname)[:80] or "defaults"
    return f"{readable}-{job_id(_root_)}"


def register_resolvers() -> None:
    """Make `cs_job_dir`, `cs_identity_free` and `cs_now` known to OmegaConf (idempotent; needed in every process
    that composes)."""
    if not OmegaConf.has_resolver("cs_job_dir"):
        OmegaConf.register_new_resolver("cs_job_dir", job_dir_name)
    if not OmegaConf.has_resolver("cs_identity_free"):
        OmegaConf.register_new_resolver("cs_identity_free", lambda: list(IDENTITY_FREE))
    distributed.register_resolver()


def completed_result(run_dir: Path, cfg: DictConfig) -> dict | None:
    """The results of this very job if its folder already holds a completed run of the same config whose saved
    files still verify (a deleted or altered model file means the job runs again)."""
    from compress_sweeps.run.verify import verify  # imported when needed: it pulls in the model code

    path = Path(run_dir) / RESULTS
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if results.get("status") != "completed" or results.get("job_id") != job_id(cfg):
        return None
    try:
        return results if verify(Path(run_dir), results)["ok"] else None
    except Exception:  # missing or unreadable model file
        return None
