"""Which layers a quantizer touches: module types, then regex include/exclude on the module's qualified name."""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from compress_sweeps.errors import ConfigError, no_layer_error

LAYER_TYPES: dict[str, type[nn.Module]] = {"Linear": nn.Linear, "Conv2d": nn.Conv2d}


def layer_types_from_names(names: Sequence[str], key: str) -> tuple[type[nn.Module], ...]:
    """Map config names (`Linear`, `Conv2d`) to classes, failing loudly on an unknown one."""
    unknown = [n for n in names if n not in LAYER_TYPES]
    if unknown or not names:
        raise ConfigError(key, list(names), f"must be a non-empty list drawn from {list(LAYER_TYPES)}")
    return tuple(LAYER_TYPES[n] for n in names)


def select_layers(
    model: nn.Module,
    layer_types: Sequence[type[nn.Module]],
    include: Sequence[str] = (".*",),
    exclude: Sequence[str] = (),
    skip_first_last: bool = False,
) -> dict[str, nn.Module]:
    """{module name -> module} in model order: of `layer_types`, matching an `include` and no `exclude` regex.

    `skip_first_last` drops the first and last selected layers, which Polino et al. keep at full precision
    because they hold few weights but are the most sensitive to quantization.
    """
    includes, excludes = [re.compile(p) for p in include], [re.compile(p) for p in exclude]
    chosen = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, tuple(layer_types))
        and any(p.search(name) for p in includes)
        and not any(p.search(name) for p in excludes)
    }
    if skip_first_last:
        names = list(chosen)
        for name in names[:1] + names[-1:]:
            chosen.pop(name)
    if not chosen:
        kinds = sorted({t.__name__ for t in layer_types})
        raise no_layer_error(model, "quantizer.", list(include), list(exclude), kinds)
    return chosen


def check_regexes(patterns: Sequence[str], key: str) -> list[str]:
    """Compile every pattern now so a typo fails at instantiation, naming the config key."""
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigError(
                key, list(patterns), f"must hold valid regexes ('{pattern}': {error})", "is invalid"
            ) from None
    return list(patterns)
