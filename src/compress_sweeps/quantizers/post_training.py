"""Post-training int8 (`quantizer=ptq_dynamic | ptq_static`): nothing while training, the int8 model after it.

The quantizer changes no weight: its result is the int8 model the run's export builds from the finalized fp32 model
(`export=onnxruntime` or `torch` with dynamic activations, `export=onnxruntime_static` with calibrated ones; each
quantizer config selects its export). It describes itself so that the run can see that: its spec names the export
it needs (`CompressionSpec.int8_export`), and the pre-launch check refuses a run whose export builds no such model
(`export=none` would finish with no int8 model and nothing said).
"""

from __future__ import annotations

from typing import Literal

from compress_sweeps.hooks import TrainingNoOps
from compress_sweeps.schema import check_arguments
from compress_sweeps.spec import CompressionSpec


class PostTrainingInt8(TrainingNoOps):
    """Every training hook does nothing; `activations` (`dynamic` or `static`) is what the int8 export must do."""

    def __init__(self, activations: Literal["dynamic", "static"] = "dynamic") -> None:
        check_arguments(PostTrainingInt8, {"activations": activations}, "quantizer.")
        self.activations = activations

    def spec(self) -> CompressionSpec:
        return CompressionSpec(method=f"PostTrainingInt8({self.activations})", int8_export=self.activations)

    def check(self, total_steps: int, how: str = "") -> None:
        """Any run length works: the export quantizes whatever the run finalized."""
