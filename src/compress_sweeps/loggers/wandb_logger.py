"""One W&B run per job, grouped per sweep, the flattened resolved config as columns.

What a job logs is computed here from plain data (`run_config`, `run_summary`), so the sweep dashboard
(reporting/dashboard.py) knows which keys every run of a sweep holds from its folder alone, offline.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

log = logging.getLogger(__name__)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'pruner': {'target_sparsity': 0.9}} -> {'pruner.target_sparsity': 0.9}: one W&B column per key."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def has_credentials() -> bool:
    """True when an API key is available to wandb (environment or ~/.netrc), so online logging can work."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1]
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode(setting: str | None) -> str:
    """The mode a run logs in: the WANDB_MODE environment variable, else the `logger.mode` setting, else `online`
    when an API key is set up and `offline` otherwise."""
    return os.environ.get("WANDB_MODE") or setting or ("online" if has_credentials() else "offline")


def default_group(multirun: bool, sweep_dir: str | Path) -> str:
    """`logger.group=null`: the sweep folder's name in multirun (every job of a sweep in one group), else `single`."""
    return Path(sweep_dir).name if multirun else "single"


def run_config(config: dict, run_dir: str | Path, choices: Mapping[str, Any]) -> dict[str, Any]:
    """The W&B config of a job: the flattened config, its folder, and the config group choices as `choice.<group>`
    (Hydra's own groups left out): a sweep over `pruner=a,b` or `+recipe=...` changes no config value the columns
    could tell apart otherwise."""
    picked = {f"choice.{group}": choice for group, choice in choices.items() if not group.startswith("hydra/")}
    return {**flatten(config), "run_dir": str(run_dir), **picked}


def run_summary(results: dict) -> tuple[dict[str, Any], dict[str, tuple[list[str], list[list[Any]]]]]:
    """(summary, tables) of a job's results: the flattened results less the traceback (in results.json), the
    methods' specs and what is per layer, which goes to tables (columns, rows) instead, so the run summary (and
    the terminal at `finish`) stays a few dozen keys: `layers` (sparsity and bits per weight) and `structure`
    (kept heads, widths and channels per module, kept blocks per block list, of a slimmed run)."""
    compression = dict(results.get("compression") or {})
    layers, bits = compression.pop("layers", {}) or {}, compression.pop("layer_bits", {}) or {}
    compression.pop("spec", None)
    structure = dict(compression.pop("structure", None) or {})
    shapes, blocks = structure.pop("layers", {}) or {}, structure.pop("blocks", {}) or {}
    kept = {key: value for key, value in results.items() if key != "traceback"}
    summary = flatten({**kept, "compression": compression | ({"structure": structure} if structure else {})})
    tables: dict[str, tuple[list[str], list[list[Any]]]] = {}
    if names := sorted(set(layers) | set(bits)):
        tables["layers"] = (["weight", "sparsity", "bits"], [[n, layers.get(n), bits.get(n)] for n in names])
    rows = [[name, s["kind"], s["kept"], s["total"]] for name, s in shapes.items()]
    rows += [[name, "blocks", s["kept"], s["total"]] for name, s in blocks.items()]
    if rows:
        tables["structure"] = (["module", "kind", "kept", "total"], rows)
    return summary, tables


class WandbLogger:
    """Log a job to Weights & Biases.

    `mode=null` picks `online` when an API key is set up and `offline` otherwise (then prints how to sync);
    the WANDB_MODE environment variable wins over both. `group=null` uses the sweep folder's name in multirun
    and `single` otherwise; `name=null` uses the job's command-line overrides.
    """

    def __init__(
        self,
        project: str = "compress_sweeps",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        mode: Literal["online", "offline", "disabled"] | None = None,
        job_type: str = "train",
    ) -> None:
        self.project, self.entity, self.group, self.name = project, entity, group, name
        self.tags, self.mode, self.job_type = list(tags or []), mode, job_type
        self.run = None

    def _hydra_names(self) -> tuple[str, str, dict[str, Any]]:
        """(group, name, config group choices) of this job."""
        if not HydraConfig.initialized():
            return "single", "default", {}
        hydra = HydraConfig.get()
        multirun = hydra.mode == RunMode.MULTIRUN
        name = hydra.job.override_dirname or "default"
        choices = dict(hydra.runtime.choices)
        return default_group(multirun, hydra.sweep.dir), f"{name}#{hydra.job.num}" if multirun else name, choices

    def start(self, config: dict, run_dir: Path) -> None:
        import wandb

        group, name, choices = self._hydra_names()
        mode = wandb_mode(self.mode)
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            group=self.group or group,
            name=self.name or name,
            tags=self.tags,
            job_type=self.job_type,
            config=run_config(config, run_dir, choices),
            dir=os.environ.get("WANDB_DIR") or str(run_dir),  # read per job: wandb caches its env at setup
            mode=mode,
            reinit="finish_previous",
        )
        if mode == "offline":
            log.info(
                "W&B is logging offline (no API key found). To upload later: wandb sync %s", Path(self.run.dir).parent
            )

    def log(self, values: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def finish(self, summary: dict, exit_code: int) -> None:
        """The results as the run summary, per-layer figures as W&B tables (`run_summary`). Speeds are there as
        ratios against the dense model (`compression.speedup`, `compression.latency.batch_<n>.ratio`), each absolute
        time beside its batch, threads and machine."""
        if self.run is None:
            return
        import wandb

        try:
            flat, tables = run_summary(summary)
            self.run.summary.update(flat)
            for key, (columns, rows) in tables.items():
                self.run.summary[key] = wandb.Table(columns=columns, data=rows)
        finally:
            self.run.finish(exit_code=exit_code)
            self.run = None
