"""One W&B run per job, grouped per sweep, the flattened resolved config as columns."""

from __future__ import annotations

import logging
import netrc
import os
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

    def _mode(self) -> str:
        return os.environ.get("WANDB_MODE") or self.mode or ("online" if has_credentials() else "offline")

    def _hydra_names(self) -> tuple[str, str]:
        if not HydraConfig.initialized():
            return "single", "default"
        hydra = HydraConfig.get()
        multirun = hydra.mode == RunMode.MULTIRUN
        group = Path(hydra.sweep.dir).name if multirun else "single"
        name = hydra.job.override_dirname or "default"
        return group, f"{name}#{hydra.job.num}" if multirun else name

    def start(self, config: dict, run_dir: Path) -> None:
        import wandb

        group, name = self._hydra_names()
        mode = self._mode()
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            group=self.group or group,
            name=self.name or name,
            tags=self.tags,
            job_type=self.job_type,
            config={**flatten(config), "run_dir": str(run_dir)},
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
        """The results as the run summary, except what is per layer (sparsity, bits; kept heads, widths, channels)
        and the methods' specs: per-layer figures go to W&B tables (`layers`, `structure`), so the summary (and the
        terminal at `finish`) stays a few dozen keys. Speeds are there as ratios against the dense model
        (`compression.speedup`, `compression.latency.batch_<n>.ratio`), each absolute time beside its batch, threads
        and machine."""
        if self.run is None:
            return
        import wandb

        compression = dict(summary.get("compression") or {})
        layers, bits = compression.pop("layers", {}) or {}, compression.pop("layer_bits", {}) or {}
        compression.pop("spec", None)
        structure = dict(compression.pop("structure", None) or {})
        shapes = structure.pop("layers", {}) or {}
        try:
            kept = {key: value for key, value in summary.items() if key != "traceback"}  # in results.json
            self.run.summary.update(
                flatten({**kept, "compression": compression | ({"structure": structure} if structure else {})})
            )
            names = sorted(set(layers) | set(bits))
            if names:
                rows = [[name, layers.get(name), bits.get(name)] for name in names]
                self.run.summary["layers"] = wandb.Table(columns=["weight", "sparsity", "bits"], data=rows)
            if shapes:
                rows = [[name, s["kind"], s["kept"], s["total"]] for name, s in shapes.items()]
                self.run.summary["structure"] = wandb.Table(columns=["module", "kind", "kept", "total"], data=rows)
        finally:
            self.run.finish(exit_code=exit_code)
            self.run = None
