"""Widths on a grid, between grid points and at random: what the cost families (families.py, conv_segments.py)
share."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

Terms = list[tuple[int, ...]]  # per block (h, w) or per segment (layer, cin, cout)


def interpolate(points: Mapping[int, float], x: float) -> float:
    """Linear interpolation of `points` {width: cost} at `x` (linear extrapolation from the two nearest points)."""
    keys = sorted(points)
    if len(keys) == 1:
        return points[keys[0]]
    low = max([k for k in keys if k <= x] or [keys[0]])
    high = min([k for k in keys if k >= x] or [keys[-1]])
    if low == high:
        return points[low]
    if x < keys[0] or x > keys[-1]:
        low, high = (keys[0], keys[1]) if x < keys[0] else (keys[-2], keys[-1])
    f = (x - low) / (high - low)
    return points[low] * (1 - f) + points[high] * f


def log_uniform(rng: random.Random, full: int, round_to: int) -> int:
    """A width between `round_to` (or 1) and `full`, log-uniform, a multiple of `round_to` (or `full` itself)."""
    low = min(round_to, full)
    width = round(math.exp(rng.uniform(math.log(low), math.log(full))) / round_to) * round_to
    return min(full, max(low, width))


def grid(full: int, fractions: Sequence[float]) -> list[int]:
    """Kept counts at `fractions` of `full` (at least 1), distinct and sorted, `full` included."""
    return sorted({max(1, round(full * f)) for f in fractions} | {full})
