"""Intermediate features read with forward hooks on named submodules, so the model is still called as `model(...)`.

For BERT-family models a layer index names the module: `hidden` -> output of encoder block i, `attention` -> the
attention probabilities of block i's self-attention (needs eager attention: SDPA returns none), `embedding` -> the
embeddings module. Any other model (the CNN) names its modules directly, e.g. `features.3`, and reads their output.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from compress_sweeps.errors import ConfigError

FEATURES = ("hidden", "attention", "embedding", "logits")


def _blocks(model: nn.Module) -> tuple[str, int] | None:
    """The name prefix and count of the transformer blocks of a BERT-family model (None for other models)."""
    base = getattr(model, "base_model", None)
    prefix = getattr(model, "base_model_prefix", "")
    for attribute in ("encoder.layer", "transformer.layer"):
        module: object = base
        for part in attribute.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList) and base is not model:
            return f"{prefix}.{attribute}", len(module)
    return None


def module_name(model: nn.Module, feature: str, layer: int | str | None, key: str = "layer") -> str:
    """The submodule whose output is `feature` at `layer` (negative indices count from the top block).

    `key` is the config key that named the layer (e.g. `distiller.matches[0].student_layer`), for errors.
    """
    kind = type(model).__name__
    if isinstance(layer, str):
        if layer not in dict(model.named_modules()):
            some = [n for n, _ in model.named_children()]
            raise ConfigError(key, layer, f"must name a module of this {kind}, e.g. {some}", "is not a layer")
        return layer
    blocks = _blocks(model)
    if blocks is None:
        some = [n for n, _ in model.named_modules() if n][:6]
        raise ConfigError(key, layer, f"must be a module name of this {kind} (no encoder blocks), e.g. {some}")
    prefix, depth = blocks
    if feature == "embedding":
        return f"{model.base_model_prefix}.embeddings"
    if layer is None or not -depth <= layer < depth:
        raise ConfigError(key, layer, f"must be a block index in [{-depth}, {depth - 1}] of this {depth}-block {kind}")
    index = layer % depth
    return f"{prefix}.{index}.attention.self" if feature == "attention" else f"{prefix}.{index}"


def _pick(feature: str, output: object) -> torch.Tensor:
    """The tensor of interest in a module's output (blocks and attention return tuples)."""
    if isinstance(output, tuple | list):
        output = output[1] if feature == "attention" else output[0]
    if feature == "attention" and output is None:
        raise RuntimeError("attention probabilities are None: the model must use eager attention")
    if hasattr(output, "last_hidden_state"):
        output = output.last_hidden_state
    return output


class FeatureTap:
    """Forward hooks that keep the latest output of named submodules: `tap.captured[key]` after each forward."""

    def __init__(self, model: nn.Module, wanted: Mapping[str, tuple[str, str]]) -> None:
        """`wanted`: {key -> (feature, module name)}."""
        modules = dict(model.named_modules())
        self.captured: dict[str, torch.Tensor] = {}
        self.handles = []
        for key, (feature, name) in wanted.items():
            if name not in modules:
                raise ValueError(f"no module named '{name}' in {type(model).__name__}")
            hook = self._hook(key, feature)
            self.handles.append(modules[name].register_forward_hook(hook))

    def _hook(self, key: str, feature: str):
        def keep(module: nn.Module, inputs: object, output: object) -> None:
            self.captured[key] = _pick(feature, output)

        return keep

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.captured.clear()


def use_eager_attention(model: nn.Module) -> str | None:
    """Switch a Hugging Face model to eager attention (which returns the probabilities); return the old setting."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "_attn_implementation"):
        return None
    previous = config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation("eager")
    return previous
