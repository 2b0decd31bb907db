"""Which layers a method touches: one meaning of `layer_types`, `include` and `exclude` for every config group.

A layer is selected when it is one of `layer_types` and its qualified module name matches any `include` regex
(every such layer when `include` is empty) and no `exclude` regex. Pruners default to leaving the classifier head,
pooler and embeddings dense (as the reference pruners do); `measure` counts sparsity over the same default set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from compress_sweeps.errors import ConfigError, no_layer_error

LAYER_TYPES: dict[str, type[nn.Module]] = {"Linear": nn.Linear, "Conv2d": nn.Conv2d, "Conv1d": nn.Conv1d}
DEFAULT_LAYER_TYPES = ("Linear", "Conv2d")
DEFAULT_EXCLUDE = ("classifier", "pooler", "embeddings", "lm_head")  # the heads and the inputs stay dense


@dataclass(frozen=True)
class LayerSelection:
    """Layer types and name regexes; `key` is the config prefix errors name (e.g. `pruner.`, `quantizer.`)."""

    layer_types: Sequence[str] = DEFAULT_LAYER_TYPES
    include: Sequence[str] = ()
    exclude: Sequence[str] = DEFAULT_EXCLUDE
    key: str = "pruner."

    def __post_init__(self) -> None:
        types = list(self.layer_types)
        if not types or any(t not in LAYER_TYPES for t in types):
            raise ConfigError(
                f"{self.key}layer_types", types, f"must be a non-empty list drawn from {list(LAYER_TYPES)}"
            )
        for name, patterns in (("include", self.include), ("exclude", self.exclude)):
            self._check_regexes(f"{self.key}{name}", patterns)
        # plain tuples: a frozen, hashable selection whatever sequence the config handed in
        object.__setattr__(self, "layer_types", tuple(types))
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @staticmethod
    def _check_regexes(key: str, patterns: Sequence[str]) -> None:
        """Every regex compiles. A config's values were checked against the methods' `schema.Regexes` before
        anything was built; this guards Python callers, in the same words."""
        shown = list(patterns) if isinstance(patterns, tuple | list) else patterns  # as a config would write it
        allowed = "must be a list of regular expressions"
        if isinstance(patterns, str):
            raise ConfigError(key, shown, f"{allowed} (one string, not a list: write [{patterns}])", "is invalid")
        for pattern in patterns:
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as error:
                raise ConfigError(key, shown, f"{allowed} ('{pattern}': {error})", "is invalid") from None

    @property
    def classes(self) -> tuple[type[nn.Module], ...]:
        return tuple(LAYER_TYPES[name] for name in self.layer_types)

    def selects_name(self, name: str) -> bool:
        """Included (by any `include` regex, or all when it is empty) and matched by no `exclude` regex."""
        if self.include and not any(re.search(p, name) for p in self.include):
            return False
        return not any(re.search(p, name) for p in self.exclude)

    def select(self, model: nn.Module, required: bool = True) -> dict[str, nn.Module]:
        """{module name -> module} of the selected layers, in model order; with `required`, none is a ConfigError."""
        chosen = {
            name: module
            for name, module in model.named_modules()
            if name and isinstance(module, self.classes) and self.selects_name(name)
        }
        if required and not chosen:
            raise self.no_layer(model)
        return chosen

    def no_layer(self, model: nn.Module) -> ConfigError:
        """The error for a selection that matches no layer of `model`."""
        return no_layer_error(model, self.key, list(self.include), list(self.exclude), list(self.layer_types))


def weight_name(module_name: str) -> str:
    """The parameter name of a layer's weight (`encoder.layer.0.attention.self.query.weight`)."""
    return f"{module_name}.weight" if module_name else "weight"
