"""The runtimes a planned model can be served in, and how each one is built, timed and chosen in a run.

`fp32` is the finalized model in PyTorch eager; `int8_dynamic` and `int8_static` are the two ONNX Runtime exports
of the project (export/onnx.py, export/onnx_static.py). A runtime knows three things: the overrides that make a
run deliver it (`quantizer=ptq_static` selects its export), how to turn a module into something callable for the
cost table (the same export functions the runs use, so the table times the graphs ONNX Runtime will run), and
where a finished run keeps it (the ONNX file its results.json names) for the end-to-end re-timing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress_sweeps.export.onnx import OnnxModel, to_int8_onnx
from compress_sweeps.export.onnx_static import to_int8_onnx_static
from compress_sweeps.models import from_run
from compress_sweeps.run.artifacts import RESULTS

Inputs = Mapping[str, torch.Tensor]


def _fp32(module: nn.Module, example: Inputs, path: Path, threads: int | None) -> Callable[..., Any]:
    return module.eval()


def _dynamic(module: nn.Module, example: Inputs, path: Path, threads: int | None) -> Callable[..., Any]:
    return to_int8_onnx(module, example, path, threads)[0]


def _static(module: nn.Module, example: Inputs, path: Path, threads: int | None) -> Callable[..., Any]:
    return to_int8_onnx_static(module, [example], path, threads=threads)[0]  # ranges of the timed batch: speed only


@dataclass(frozen=True)
class Runtime:
    """One way of serving a model: its name, the run overrides that deliver it, how the cost table builds it."""

    name: str
    overrides: tuple[str, ...]
    build: Callable[[nn.Module, Inputs, Path, int | None], Callable[..., Any]]
    description: str

    @property
    def int8(self) -> bool:
        return self.name != "fp32"

    def load(self, folder: str | Path, num_labels: int, threads: int | None) -> Callable[..., Any]:
        """The model a finished run delivers in this runtime: its weights (fp32) or its int8 ONNX file."""
        if not self.int8:
            return from_run(str(folder), num_labels).eval()
        results = json.loads((Path(folder) / RESULTS).read_text())
        export = results["compression"].get("int8_export") or {}
        if "file" not in export:
            raise FileNotFoundError(f"{folder}: the run kept no int8 file ({export.get('skipped', 'no export')})")
        return OnnxModel(Path(folder) / export["file"], threads)


RUNTIMES: dict[str, Runtime] = {
    runtime.name: runtime
    for runtime in (
        Runtime("fp32", ("quantizer=none", "export=none"), _fp32, "fp32 PyTorch eager"),
        Runtime("int8_dynamic", ("quantizer=ptq_dynamic",), _dynamic, "int8 ONNX Runtime, dynamic activations"),
        Runtime("int8_static", ("quantizer=ptq_static",), _static, "int8 ONNX Runtime, static (calibrated)"),
    )
}


def score_of(results: Mapping[str, Any], runtime: Runtime, metric: str) -> float | None:
    """A finished run's score in `runtime`: the int8 model's where the run exported one, else the fp32 model's."""
    if runtime.int8:
        return (results.get("compression", {}).get("int8_export") or {}).get(metric)
    return (results.get("metrics") or {}).get(metric)
