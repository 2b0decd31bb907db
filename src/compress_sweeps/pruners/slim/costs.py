"""The prunable part's cost as a function of how many units each layer keeps (the allocation's cost model).

Parameters are counted from the tensors and FLOPs per module from one real forward pass (models/costs.py); here
they become terms that scale with the kept fraction of the unit groups slicing them, so the allocation can ask
what any removal saves without another forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass
class Terms:
    """A model's prunable cost as a sum of terms, each scaled by the kept fraction of at most two unit groups.

    A weight of shape (out, in) whose rows belong to group a and columns to group b keeps
    `coef * kept_a/units_a * kept_b/units_b` of its parameters (and of its layer's FLOPs); a bias or a BatchNorm
    scale keeps `coef * kept_a/units_a`; attention's score and value matmuls keep the kept fraction of the heads.
    Exact, also when both dimensions of one convolution shrink (its own channels and the previous layer's): the
    removed cost of two coupled units is not the sum of their separate costs.
    """

    coef: torch.Tensor  # [terms] float64: the term's whole cost
    first: torch.Tensor  # [terms] long: group scaling it (len(groups) = none)
    second: torch.Tensor  # [terms] long: a second group scaling it (len(groups) = none)
    block: torch.Tensor  # [terms] long: block holding it (number of blocks = none)

    def kept(self, fractions: torch.Tensor) -> torch.Tensor:
        """Per term, the cost that stays when group g keeps `fractions[g]` of its units."""
        f = torch.cat([fractions.double(), torch.ones(1, dtype=torch.float64)])
        return self.coef * f[self.first] * f[self.second]

    def marginal(self, fractions: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """Per group, what removing one more unit saves now (the derivative of the kept cost)."""
        groups = len(units)
        f = torch.cat([fractions.double(), torch.ones(1, dtype=torch.float64)])
        per_unit = torch.zeros(groups + 1, dtype=torch.float64)
        per_unit.index_add_(0, self.first, self.coef * f[self.second])
        per_unit.index_add_(0, self.second, self.coef * f[self.first])
        return per_unit[:groups] / units.double()


def cost_terms(groups: list, blocks_of_groups: list[int], flops: Mapping[str, float] | None) -> Terms:
    """The terms of every parameter a group slices (params), or of every sliced layer's FLOPs (flops)."""
    none = len(groups)
    sliced: dict[str, dict] = {}  # parameter (params) or layer (flops) -> coef, groups per dim, block
    for g, group in enumerate(groups):
        for s in group.slices:
            if flops is not None and not s.scored:
                continue  # biases and norms cost no counted FLOPs
            key = s.name if flops is None else s.module_name
            coef = float(s.param.numel()) if flops is None else flops.get(s.module_name, 0.0)
            entry = sliced.setdefault(key, {"coef": coef, "dims": {}, "block": blocks_of_groups[g]})
            entry["dims"].setdefault(min(s.dim, 1), g)
        if flops is not None and group.kind == "heads":  # score and value matmuls: per head, in no Linear
            # the attention module's own FLOPs less its sliced Linear layers' (q/k/v; a decoder's o_proj is inside
            # it too, a BERT block's output dense is not), each counted once already as a term of its own
            inside = {s.module_name for s in group.slices if s.scored and s.module_name.startswith(group.name + ".")}
            extra = flops.get(group.name, 0.0) - sum(flops.get(name, 0.0) for name in inside)
            sliced[f"{group.name}#attention"] = {"coef": extra, "dims": {0: g}, "block": blocks_of_groups[g]}
    entries = list(sliced.values())
    return Terms(
        coef=torch.tensor([e["coef"] for e in entries], dtype=torch.float64),
        first=torch.tensor([e["dims"].get(0, none) for e in entries], dtype=torch.long),
        second=torch.tensor([e["dims"].get(1, none) for e in entries], dtype=torch.long),
        block=torch.tensor([e["block"] for e in entries], dtype=torch.long),
    )
