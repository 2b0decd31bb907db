"""The per-machine cost table: each block kind at each width, per runtime, timed once and cached with the machine.

Every probe of the model's family (families.py) is built in every runtime (runtimes.py: fp32 PyTorch, and the two
ONNX Runtime int8 exports made by the runs' own export code) and timed interleaved with the dense model in that
runtime, on the plan's inputs (`plan.batch_size` x `plan.seq_len`). A cost is the probe's median time over the dense
model's, so drift of the machine between probes cancels; each is the median over `trials` separate interleaved
sets (ONNX Runtime's multi-threaded sessions switch between two speeds for seconds at a time on a shared machine,
which moves small models more than large ones). The runtimes' dense models are timed against the dense fp32 model
(`factors`), again at plan time (`refresh`): predictions are ratios against the dense fp32 model, and milliseconds
are those ratios times the dense model's time measured now.

The table is cached under `<cache_dir>/latency/` keyed by the machine's identity (processor, cores, threads,
torch and ONNX Runtime versions), the dense architecture's signature, the input shapes and the grid, so a second
plan on the same machine and model measures nothing but the factors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress_sweeps.models.timing import interleaved_ms, machine
from compress_sweeps.planner.runtimes import RUNTIMES, Runtime
from compress_sweeps.planner.widths import Terms

CACHE = "latency"
FORMAT = "compress_sweeps.cost_table/4"
log = logging.getLogger(__name__)


class Fixed:
    """A model called on its own inputs whatever it is given: probes with inputs of their own in one interleave."""

    def __init__(self, model: Callable[..., Any], inputs: Mapping[str, torch.Tensor]) -> None:
        self.model, self.inputs = model, inputs

    def __call__(self, **_: torch.Tensor) -> Any:
        return self.model(**self.inputs)


def identity(threads: int) -> dict[str, Any]:
    """What the times depend on besides the model: processor, cores, threads and the runtimes' versions."""
    import onnxruntime

    return {
        "machine": machine(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "platform": platform.machine(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def input_shapes(inputs: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in inputs.items()}


def timed_ratios(
    models: Mapping[str, Callable[..., Any]],
    inputs: Mapping[str, torch.Tensor],
    reference: str,
    repeats: int,
    trials: int,
) -> dict[str, float]:
    """Each model's median time over `reference`'s, interleaved; the median over `trials` separate sets."""
    sets = [interleaved_ms(models, inputs, repeats=repeats, warmup=1) for _ in range(trials)]
    return {name: statistics.median(s[name] / s[reference] for s in sets) for name in models}


@dataclass
class CostTable:
    """Costs per runtime ({entry: time / dense time in that runtime}) and the runtimes' factors against fp32."""

    identity: dict[str, Any]
    signature: dict[str, Any]
    inputs: dict[str, list[int]]
    costs: dict[str, dict[str, float]]
    factors: dict[str, float]
    dense_ms: float
    measured_s: float
    coefficients: dict[str, list[float]] = field(default_factory=dict)
    calibration: dict[str, list[dict]] = field(default_factory=dict)
    format: str = FORMAT
    refreshed: dict[str, Any] = field(default_factory=dict)

    def predict(self, family: Any, terms: Terms, runtime: str) -> dict[str, float]:
        """A model of `terms` in `runtime`: its latency as a ratio against the dense fp32 model, and in ms."""
        features = family.features(self.costs[runtime], terms)
        ratio = sum(c * f for c, f in zip(self.coefficients[runtime], features, strict=True)) * self.factors[runtime]
        return {"latency_ratio": ratio, "latency_ms": ratio * self.dense_ms}

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> CostTable | None:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        return cls(**data) if data.get("format") == FORMAT else None


def cache_key(ident: Mapping, signature: Mapping, shapes: Mapping, runtimes: Sequence[str], family: Any) -> str:
    grid = [getattr(family, name) for name in ("HEAD_FRACTIONS", "FFN_FRACTIONS", "FRACTIONS") if hasattr(family, name)]
    blob = json.dumps([FORMAT, ident, signature, shapes, sorted(runtimes), grid], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def built(runtime: Runtime, module: nn.Module, example: Mapping[str, torch.Tensor], folder: Path, name: str, threads):
    safe = "".join(c if c.isalnum() else "_" for c in name)
    return runtime.build(module, example, folder / f"{runtime.name}-{safe}.onnx", threads)


def dense_factors(
    dense: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    runtimes: Sequence[str],
    threads: int,
    repeats: int,
    trials: int,
    keep: dict[str, Callable[..., Any]] | None = None,
) -> tuple[dict[str, float], float]:
    """Each runtime's dense model over the dense fp32 model, timed interleaved, and the dense fp32 time (ms); the
    runtimes' dense models built for it are added to `keep` when given (loaded sessions: their files can go)."""
    with tempfile.TemporaryDirectory() as tmp:
        models = {name: built(RUNTIMES[name], dense, inputs, Path(tmp), "dense", threads) for name in runtimes}
        models["fp32"] = dense.eval()
        sets = [interleaved_ms(models, inputs, repeats=repeats, warmup=1) for _ in range(trials)]
    if keep is not None:
        keep.update({name: models[name] for name in runtimes if name != "fp32"})
    factors = {name: statistics.median(s[name] / s["fp32"] for s in sets) for name in runtimes}
    return factors, statistics.median(s["fp32"] for s in sets)


CALIBRATION_MODELS = 6


def calibrate(
    family: Any,
    costs: Mapping[str, float],
    runtime: Runtime,
    inputs: Mapping[str, torch.Tensor],
    folder: str,
    threads: int,
    repeats: int,
    trials: int,
    round_to: int,
) -> tuple[list[float], list[dict]]:
    """Weights of the family's features, fitted so that they predict the dense model, the family's deepest cuts and
    `CALIBRATION_MODELS` random slim models, each timed whole against the dense model in `runtime`; returns them and
    each model's measured and predicted cost (the fit's residuals are the table's own error). The fit is least
    squares on relative errors (each row weighed by 1 / its measured cost): a budget is a ratio, and plain least
    squares spends the fit on the large models, leaving the deep cuts a plan lands on 15-35% off (fp32, MiniLM and
    the digits CNN, measured with format 3 of this table)."""
    rng = random.Random(0)
    shapes = family.deepest_terms(round_to) + [family.random_terms(rng, round_to) for _ in range(CALIBRATION_MODELS)]
    models = {"dense": built(runtime, family.dense, inputs, Path(folder), "calibration-dense", threads)}
    for i, terms in enumerate(shapes):
        models[f"random{i}"] = built(runtime, family.build(terms), inputs, Path(folder), f"calibration-{i}", threads)
    measured = timed_ratios(models, inputs, "dense", repeats, trials)
    rows = [family.features(costs, family.dense_terms())] + [family.features(costs, t) for t in shapes]
    targets = [1.0] + [measured[f"random{i}"] for i in range(len(shapes))]
    weight = 1 / torch.tensor(targets, dtype=torch.float64)[:, None]
    solution = torch.linalg.lstsq(
        torch.tensor(rows, dtype=torch.float64) * weight, torch.tensor(targets, dtype=torch.float64)[:, None] * weight
    )
    weights = solution.solution[:, 0].tolist()
    report = [
        {
            "terms": [list(t) for t in terms],
            "measured": target,
            "predicted": sum(w * f for w, f in zip(weights, row, strict=True)),
        }
        for terms, target, row in zip([family.dense_terms(), *shapes], targets, rows, strict=True)
    ]
    return weights, report


def measure_table(
    family: Any,
    inputs: Mapping[str, torch.Tensor],
    runtimes: Sequence[str],
    threads: int,
    repeats: int = 6,
    trials: int = 2,
    round_to: int = 16,
    keep: dict[str, Callable[..., Any]] | None = None,
) -> CostTable:
    """Time every probe of `family` in every runtime against the dense model (see the module docstring)."""
    started = time.perf_counter()
    costs: dict[str, dict[str, float]] = {}
    coefficients: dict[str, list[float]] = {}
    calibration: dict[str, list[dict]] = {}
    probes = family.probes()
    for name in runtimes:
        runtime = RUNTIMES[name]
        with tempfile.TemporaryDirectory() as tmp:
            models = {
                entry: Fixed(built(runtime, module, own or inputs, Path(tmp), entry, threads), own or inputs)
                for entry, (module, own) in probes.items()
            }
            costs[name] = timed_ratios(models, inputs, "dense", repeats, trials)
            coefficients[name], calibration[name] = calibrate(
                family, costs[name], runtime, inputs, tmp, threads, repeats, trials, round_to
            )
        log.info("cost table: %s, %d probes (%.0f s so far)", name, len(models), time.perf_counter() - started)
    factors, dense_ms = dense_factors(family.dense, inputs, runtimes, threads, repeats, trials, keep)
    return CostTable(
        identity=identity(threads),
        signature=family.signature(),
        inputs=input_shapes(inputs),
        costs=costs,
        factors=factors,
        dense_ms=dense_ms,
        measured_s=time.perf_counter() - started,
        coefficients=coefficients,
        calibration=calibration,
    )


def cost_table(
    family: Any,
    inputs: Mapping[str, torch.Tensor],
    runtimes: Sequence[str],
    threads: int,
    cache_dir: str | Path,
    repeats: int = 6,
    trials: int = 2,
    round_to: int = 16,
    keep: dict[str, Callable[..., Any]] | None = None,
) -> tuple[CostTable, Path, bool]:
    """The cached table of this machine, model and input shape, or a new one (measured, then cached); the
    runtimes' factors and the dense time are measured again now either way (the runtimes' dense models built for
    that go to `keep`, when given). Returns (table, its file, cached)."""
    ident = identity(threads)
    key = cache_key(ident, family.signature(), input_shapes(inputs), [*runtimes, f"round_to={round_to}"], family)
    path = Path(cache_dir).expanduser() / CACHE / f"{key}.json"
    table = CostTable.load(path)
    cached = table is not None and all(r in table.costs for r in runtimes)
    if not cached:
        table = measure_table(family, inputs, runtimes, threads, repeats, trials, round_to, keep)
        table.save(path)
    else:
        factors, dense_ms = dense_factors(family.dense, inputs, runtimes, threads, repeats, trials, keep)
        table.refreshed = {"factors_at_build": table.factors, "dense_ms_at_build": table.dense_ms}
        table.factors, table.dense_ms = factors, dense_ms
    return table, path, cached
