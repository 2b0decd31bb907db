"""Which layers a quantizer touches: a `LayerSelection` (weights/selection.py), optionally without the first and
last selected layers."""

from __future__ import annotations

from torch import nn

from compress_sweeps.weights.selection import LayerSelection


def select_layers(model: nn.Module, selection: LayerSelection, skip_first_last: bool = False) -> dict[str, nn.Module]:
    """{module name -> module} in model order.

    `skip_first_last` drops the first and last selected layers, which Polino et al. keep at full precision
    because they hold few weights but are the most sensitive to quantization.
    """
    chosen = selection.select(model)
    if skip_first_last:
        names = list(chosen)
        for name in names[:1] + names[-1:]:
            chosen.pop(name)
    if not chosen:
        raise selection.no_layer(model)
    return chosen
