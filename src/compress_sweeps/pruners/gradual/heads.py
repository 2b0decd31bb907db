"""Attention-head pruning for BERT-family encoders: a head's query/key/value rows and output-projection columns
are pruned together.

Each attention block is one target whose groups are its heads. A head's score is the reduction of its elements'
scores over the four slices; a pruned head has its `head_dim` rows of the query, key and value weights and its
`head_dim` columns of the output projection set to zero, so it contributes nothing to the block's output. The
shapes stay as they are (the saved weights load into the unchanged architecture); in the results each weight's
pattern reads as its block shape, e.g. `32x384` for a query weight and `384x32` for the output projection.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from compress_sweeps.errors import ConfigError
from compress_sweeps.pruners.targets import add_mask
from compress_sweeps.weights.patterns import reduce_blocks
from compress_sweeps.weights.selection import LayerSelection

# attribute names of (query, key, value, heads) on the self-attention module and the output projection's path
# relative to the self-attention module's parent: BERT/RoBERTa/ELECTRA/MiniLM, then DistilBERT
LAYOUTS = (
    (("query", "key", "value", "num_attention_heads"), "output.dense", True),
    (("q_lin", "k_lin", "v_lin", "n_heads"), "out_lin", False),
)


class HeadTarget:
    """The heads of one attention block."""

    def __init__(self, name: str, modules: dict[str, nn.Linear], heads: int, reduce: str) -> None:
        """`modules`: {module name -> Linear} of the query, key, value and output projections, in that order."""
        self.name, self.heads, self.reduce = name, heads, reduce
        self.modules = list(modules.values())
        self.param_names = [f"{n}.weight" for n in modules]
        self.head_dim = self.modules[0].weight.shape[0] // heads
        self.weights = [m.weight for m in self.modules]
        self.masks = [add_mask(m) for m in self.modules]
        self.num_groups = heads
        self.group_size = sum(w.numel() for w in self.weights) // heads
        self.max_fraction = 1.0

    def labels(self) -> dict[str, str]:
        """Each weight's zeros as blocks: head_dim whole rows (q, k, v), head_dim whole columns (output)."""
        labels = {
            n: f"{self.head_dim}x{w.shape[1]}" for n, w in zip(self.param_names[:3], self.weights[:3], strict=True)
        }
        labels[self.param_names[3]] = f"{self.weights[3].shape[0]}x{self.head_dim}"
        return labels

    @torch.no_grad()
    def group_scores(self, scores: Sequence[torch.Tensor]) -> torch.Tensor:
        masked = [s.float().masked_fill(m == 0, float("-inf")) for s, m in zip(scores, self.masks, strict=True)]
        per_head = [s.reshape(self.heads, -1) for s in masked[:3]]
        per_head.append(masked[3].reshape(masked[3].shape[0], self.heads, self.head_dim).transpose(0, 1).flatten(1))
        return reduce_blocks(torch.cat(per_head, dim=1), (1,), self.reduce)

    @torch.no_grad()
    def set_pruned(self, pruned: torch.Tensor) -> None:
        keep = (~pruned).to(self.masks[0].dtype).repeat_interleave(self.head_dim)
        for mask in self.masks[:3]:
            mask.copy_(keep.unsqueeze(1).expand_as(mask))
        self.masks[3].copy_(keep.unsqueeze(0).expand_as(self.masks[3]))


def select_heads(model: nn.Module, selection: LayerSelection, reduce: str, taken: set[str]) -> list[HeadTarget]:
    """One target per attention block whose self-attention module name passes the selection's include/exclude."""
    key, include = selection.key, list(selection.include)
    targets = []
    for name, module in model.named_modules():
        for (q, k, v, heads), out_path, nested in LAYOUTS:
            if not all(hasattr(module, a) for a in (q, k, v, heads)) or not selection.selects_name(name):
                continue
            out_name = f"{name.rsplit('.', 1)[0]}.{out_path}" if nested else f"{name}.{out_path}"
            modules = {f"{name}.{a}": getattr(module, a) for a in (q, k, v)}
            modules[out_name] = model.get_submodule(out_name)
            for layer in modules:  # each weight belongs to one group: its mask would be overwritten otherwise
                if layer in taken:
                    raise ConfigError(
                        f"{key}include",
                        list(include),
                        "must be disjoint from the other groups' layers",
                        f"takes '{layer}' again",
                    )
                taken.add(layer)
            targets.append(HeadTarget(name, modules, int(getattr(module, heads)), reduce))
    if not targets:
        raise ConfigError(
            f"{key}pattern",
            "head",
            f"needs BERT-family attention blocks (query/key/value) selected by {key}include/{key}exclude",
            problem=f"finds no attention block in this {type(model).__name__}",
        )
    return targets
