"""The global allocation's fast threshold (selection on capped scores) against a brute-force reference: the largest
candidate threshold whose clamped counts fit the budget, on random scores with ties, +-inf, caps and mixed sizes."""

from __future__ import annotations

import random

import pytest
import torch

from compress_sweeps.pruners.gradual.allocate import allocate, group_bounds, kth_smallest


def reference(scores, sizes, target, min_s, max_s):
    """Try every candidate threshold (each score, and +inf), keep the largest that fits; then as `allocate` does."""
    bounds = [group_bounds(len(s), target, min_s, cap) for s, cap in zip(scores, max_s, strict=True)]
    budget = round(target * sum(len(s) * size for s, size in zip(scores, sizes, strict=True)))
    candidates = sorted({float(v) for s in scores for v in s.tolist() if v != float("inf")}) + [float("inf")]

    def counts(t):
        return [min(max(int((s < t).sum()), lo), hi) for s, (lo, hi) in zip(scores, bounds, strict=True)]

    fitting = [t for t in candidates if sum(c * z for c, z in zip(counts(t), sizes, strict=True)) <= budget]
    threshold = max(fitting) if fitting else candidates[0]
    pruned = []
    for s, count in zip(scores, counts(threshold), strict=True):
        below = s < threshold
        if int(below.sum()) != count:
            below = torch.zeros(len(s), dtype=torch.bool)
            below[s.topk(count, largest=False).indices] = True
        pruned.append(below)
    return pruned


@pytest.mark.parametrize("seed", range(300))
def test_global_allocation_equals_the_brute_force_threshold(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    layers = rng.randint(1, 5)
    sizes = [rng.choice([1, 4])] * layers if seed % 3 else [rng.choice([1, 3, 4, 7]) for _ in range(layers)]
    scores = []
    for _ in range(layers):
        n = rng.randint(1, 40)
        s = torch.randn(n) if seed % 2 else torch.randint(0, 4, (n,)).float()  # ties
        s[torch.rand(n) < (0.3 if seed % 5 == 0 else 0.0)] = float("-inf")  # already pruned
        s[torch.rand(n) < (0.3 if seed % 7 == 0 else 0.0)] = float("inf")  # never pruned (N:M keepers)
        scores.append(s)
    target = rng.random()
    max_s = [rng.choice([1.0, 0.98, 0.7, 0.5]) for _ in range(layers)]
    min_s = min(rng.choice([0.0, 0.1, 0.3]), *max_s)
    expected = reference(scores, sizes, target, min_s, max_s)
    got = allocate(scores, sizes, target, "global", min_s, max_s)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


@pytest.mark.parametrize("kind", ["normal", "sorted", "ties", "infinities", "scales"])
def test_kth_smallest_is_exact_on_large_inputs(kind):
    torch.manual_seed(0)
    n = 200_000
    values = {
        "normal": lambda: torch.randn(n),
        "sorted": lambda: torch.randn(n).sort().values,
        "ties": lambda: torch.randint(0, 3, (n,)).float(),
        "infinities": lambda: torch.randn(n).masked_fill(torch.rand(n) < 0.4, float("-inf")),
        "scales": lambda: torch.cat([torch.randn(n // 2) * 1e-6, torch.randn(n // 2) * 1e6]),
    }[kind]()
    for k in (1, 17, n // 3, n // 2, n - 5, n):
        assert kth_smallest(values, k) == values.kthvalue(k).values


@pytest.mark.parametrize("label", ["4x1", "1x4", "2x2", "1x1", "channel", "2:4"])
@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
def test_fast_mask_paths_equal_the_plain_ones(label, reduce):
    """Group scores read from one mask entry per group, and masks written by one broadcast copy, are what masking
    every score first and expanding the pruned groups give."""
    from compress_sweeps.weights.patterns import parse_pattern

    torch.manual_seed(0)
    pattern, shape = parse_pattern(label), (8, 16)
    for _ in range(5):
        scores = torch.randn(shape)
        pruned = torch.rand(len(pattern.group_scores(scores, reduce))) < 0.4
        mask = torch.empty(shape)
        pattern.write_mask(mask, pruned)
        assert torch.equal(mask, pattern.expand(pruned, shape))
        plain = pattern.group_scores(scores.masked_fill(mask == 0, float("-inf")), reduce)
        assert torch.equal(pattern.masked_group_scores(scores, mask, reduce), plain)
