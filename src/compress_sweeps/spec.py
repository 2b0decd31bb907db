"""What a compression method promises about the finalized weights, as data: `CompressionSpec`.

A method that implements `hooks.Describes` returns one from `spec()`. The run records it in results.json
(`compression.spec`, one entry per method) and every reader asks it instead of inspecting the method: `measure`
re-counts the patterns it names and the structure it promises, `verify` checks the saved files against it (from
the run folder alone), the
pre-launch checks read `keeps_zeros` and `quantization`, the HF Trainer callback reads `batch_keys`. Before
`attach` a method does not know its layers yet: its spec then carries the settings and empty weight lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SparsityPromise:
    """The weights in `patterns` ({parameter name -> pattern label, e.g. `4x1`, `2:4`, `channel`, `32x384`}) hold
    their zeros in that pattern, and `target` of all their values together are exactly zero (None: no fixed
    fraction, e.g. pattern_lock keeps whatever zeros it found)."""

    patterns: Mapping[str, str] = field(default_factory=dict)
    target: float | None = None


@dataclass(frozen=True)
class QuantizationPromise:
    """Every weight in `weights` holds at most 2^`bits` distinct values per level group (`group`: None = the whole
    tensor, `row` = each output row, n = buckets of n consecutive values); with `uniform`, those values lie on
    an evenly spaced grid (learned, non-uniform points do not)."""

    weights: tuple[str, ...] = ()
    bits: int = 8
    group: int | str | None = None
    uniform: bool = True


@dataclass(frozen=True)
class StructurePromise:
    """Whole units (attention heads, FFN neurons, encoder blocks, conv channels) taken out of a prunable part.

    `scope`: the module names of the prunable part in the model the method attached to (the model the run folder's
    `model_config.yaml` rebuilds); nothing outside it changes shape, so what the whole model lost is what the part
    lost. `target` of the part's `target_metric` (`params`, or `flops` counted on inputs of the `example` shapes,
    {input -> {shape, dtype}}) is removed: at most `target`, and less by at most `tolerance` (the cost of the
    largest single removal decision, as a fraction of the part). `removes_units`: the units are cut out, so the
    saved model is smaller (its shapes in slim_structure.json); False: they stay in place as zeros, and the
    method's sparsity promises name the zero-unit patterns instead.
    """

    scope: tuple[str, ...] = ()
    target: float = 0.0
    target_metric: str = "params"
    tolerance: float = 0.0
    removes_units: bool = True
    example: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class CompressionSpec:
    """One method's promises about the finalized model.

    `method`: a readable name (the class and its key setting). `sparsity`: one promise per group of weights with
    its own target. `quantization`: None for a method that does not quantize. `keeps_zeros`: an exact zero in a
    weight the method selects at attach stays zero through training (a pruned starting model stays pruned).
    `batch_keys`: entries the method reads from each training batch besides the model inputs and labels (e.g.
    `idx` for a teacher-output cache). `structure`: None for a method that keeps the model's units. `int8_export`:
    `dynamic` or `static` for a method whose result is the int8 model an export builds after finalize (post-training
    int8, which changes no weight itself); the run's export must build that one (run/build.py `check_export`).
    `shadows_weights`: the method keeps its own full-precision copy of the weights it selects and writes it back
    into the model before each optimizer step (quantization-aware training's shadow, Discovering Neural Wirings'
    dense copy): two such methods in one run overwrite each other's copy (run/build.py `check_shadows`).
    """

    method: str
    sparsity: tuple[SparsityPromise, ...] = ()
    quantization: QuantizationPromise | None = None
    keeps_zeros: bool = False
    batch_keys: frozenset[str] = frozenset()
    structure: StructurePromise | None = None
    int8_export: str | None = None
    shadows_weights: bool = False

    @property
    def patterns(self) -> dict[str, str]:
        """{parameter name -> pattern label} over all sparsity promises."""
        return {name: label for promise in self.sparsity for name, label in promise.patterns.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (for results.json)."""
        data = asdict(self)
        data["sparsity"] = [{"patterns": dict(p.patterns), "target": p.target} for p in self.sparsity]
        data["batch_keys"] = sorted(self.batch_keys)
        if self.quantization is not None:
            data["quantization"]["weights"] = list(self.quantization.weights)
        if self.structure is not None:
            data["structure"] |= {"scope": list(self.structure.scope), "example": dict(self.structure.example)}
        if self.int8_export is None:  # only a post-training quantizer's entry has it: the others read as before
            del data["int8_export"]
        if not self.shadows_weights:  # likewise: only the methods that keep a copy of the weights say so
            del data["shadows_weights"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressionSpec:
        """The spec recorded in results.json (`to_dict`'s output)."""
        q = data.get("quantization")
        quantization = (
            None if q is None else QuantizationPromise(tuple(q["weights"]), q["bits"], q["group"], q["uniform"])
        )
        st = data.get("structure")
        structure = None if st is None else StructurePromise(**(dict(st) | {"scope": tuple(st["scope"])}))
        return cls(
            method=str(data["method"]),
            sparsity=tuple(SparsityPromise(dict(p["patterns"]), p["target"]) for p in data.get("sparsity", ())),
            quantization=quantization,
            keeps_zeros=bool(data.get("keeps_zeros", False)),
            batch_keys=frozenset(data.get("batch_keys", ())),
            structure=structure,
            int8_export=data.get("int8_export"),
            shadows_weights=bool(data.get("shadows_weights", False)),
        )
