"""The verification gate: re-count a finished run from its saved files and check them against the config.

Independent of the pruner's and quantizer's own bookkeeping: it reloads `model.safetensors`, re-counts sparsity per
layer and overall, checks the configured pattern (N:M groups, NxM blocks, channels) and the number of distinct
quantization levels against the configured bits, and compares all of it with what `results.json` reports. A
mismatch beyond the tolerances below marks the run failed, naming the check. `compress-sweeps verify <run folder>`
runs it on any existing run.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from compress_sweeps.models.runs import WEIGHTS
from compress_sweeps.run.artifacts import RESULTS, write_json_atomic
from compress_sweeps.run.measure import pattern_holds

RECOUNT_TOLERANCE = 1e-6  # reported vs re-counted figures: the same numbers, up to float rounding
TARGET_TOLERANCE = 0.005  # achieved vs configured sparsity over the pruned layers: +-0.5 percentage points
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _check(name: str, expected, measured, ok: bool) -> dict:
    return {"check": name, "expected": expected, "measured": measured, "ok": bool(ok)}


def zero_units(weight: torch.Tensor, pattern: str) -> tuple[int, int]:
    """(all-zero units, units) of an NxM-block or `channel` pattern: how much of it is pruned as whole units."""
    matrix = weight.reshape(weight.shape[0], -1)
    out, inp = matrix.shape
    rows, cols = (1, inp) if pattern == "channel" else map(int, pattern.split("x"))
    if out % rows or inp % cols:
        return 0, 1
    zero = (matrix == 0).reshape(out // rows, rows, inp // cols, cols).all(dim=3).all(dim=1)
    return int(zero.sum()), zero.numel()


def max_levels(weight: torch.Tensor, group: int | str | None) -> int:
    """Most distinct non-zero values in any group: the tensor, each output row, or buckets of `group` values."""
    flat = weight.reshape(-1)
    if group == "row":
        rows = weight.reshape(weight.shape[0], -1)
    elif isinstance(group, int):
        rows = torch.nn.functional.pad(flat, (0, (-flat.numel()) % group)).reshape(-1, group)
    else:
        rows = flat.reshape(1, -1)
    return max(int(torch.unique(row[row != 0]).numel()) for row in rows)


def pruning_checks(weights: dict, reported: dict, pruner: DictConfig | None, quantized: bool) -> list[dict]:
    """The configured target and pattern, re-counted on the layers the run reports as pruned."""
    if pruner is None or not str(pruner.get("_target_", "")).endswith(".Pruner") or pruner.get("groups"):
        return []  # no pruner, or several groups (each with its own target): the per-layer recount still applies
    pattern = str(pruner.pattern).lower()
    layers = {name: weights[name] for name in reported["layers"]}
    numel = sum(w.numel() for w in layers.values())
    sparsity = sum(int((w == 0).sum()) for w in layers.values()) / numel
    checks = []
    nm = re.fullmatch(r"(\d+):(\d+)", pattern)
    target = pruner.target_sparsity
    if target is None and nm:
        target = 1 - int(nm[1]) / int(nm[2])
    if target is not None:
        # quantization can only add zeros (small weights rounding to 0): the target is then a floor
        ok = sparsity >= target - TARGET_TOLERANCE if quantized else abs(sparsity - target) <= TARGET_TOLERANCE
        checks.append(_check("target_sparsity", target, sparsity, ok))
    blocks = pattern == "channel" or re.fullmatch(r"\d+x\d+", pattern)
    if nm or (blocks and not quantized):
        # N:M groups within N non-zeros, or every block all zero or free of zeros (measure's tensor-only check;
        # quantization only adds zeros, so N:M must hold with it too)
        bad = [name for name, w in layers.items() if not pattern_holds(w, pattern)]
        checks.append(_check(f"pattern {pattern}", "holds in every layer", bad or "all layers", not bad))
    elif blocks and target is not None:
        # quantization rounds stray weights to zero inside kept blocks; whole zero units must still reach the target
        counts = [zero_units(w, pattern) for w in layers.values()]
        units = sum(z for z, _ in counts) / sum(n for _, n in counts)
        checks.append(_check(f"pattern {pattern}", target, units, units >= target - TARGET_TOLERANCE))
    return checks


def quantization_checks(weights: dict, reported: dict, quantizer: DictConfig | None) -> list[dict]:
    """At most 2^bits distinct non-zero levels per tensor (per bucket / per output channel where configured)."""
    if quantizer is None or quantizer.get("bits") is None:
        return []
    bits = int(quantizer.bits)
    group = quantizer.get("bucket_size") or ("row" if quantizer.get("per_channel") else None)
    quantized = [name for name, b in (reported.get("layer_bits") or {}).items() if b <= 8]
    checks = [_check("quantized layers", ">= 1", len(quantized), bool(quantized))]
    worst = {name: max_levels(weights[name], group) for name in quantized}
    bad = {name: levels for name, levels in worst.items() if levels > 2**bits}
    most = max(worst.values(), default=0)
    checks.append(_check(f"levels <= 2^{bits} per {group or 'tensor'}", 2**bits, bad or most, not bad))
    return checks


def verify(run_dir: Path, cfg: DictConfig, results: dict) -> dict:
    """All checks for one run; `{"ok": ..., "checks": [...], "tolerance": ...}` for results.json."""
    weights = load_file(str(Path(run_dir) / WEIGHTS))
    reported = results["compression"]
    checks = []
    for name, sparsity in reported["layers"].items():
        recount = float((weights[name] == 0).float().mean()) if name in weights else None
        if recount is None or abs(recount - sparsity) > RECOUNT_TOLERANCE:
            checks.append(_check(f"layer {name} sparsity", sparsity, recount, False))
    checks.append(
        _check("layers re-counted", len(reported["layers"]), len(reported["layers"]) - len(checks), not checks)
    )
    layers = [weights[n] for n in reported["layers"] if n in weights]
    numel = sum(w.numel() for w in layers)
    overall = sum(int((w == 0).sum()) for w in layers) / numel if numel else 0.0
    checks.append(
        _check("sparsity", reported["sparsity"], overall, abs(overall - reported["sparsity"]) <= RECOUNT_TOLERANCE)
    )
    params = [t for n, t in weights.items() if not n.endswith(BUFFERS)]
    nonzero = sum(int(t.count_nonzero()) for t in params)
    checks.append(_check("nonzero_params", reported["nonzero_params"], nonzero, nonzero == reported["nonzero_params"]))
    quantizer = cfg.get("quantizer")
    quantizing = quantizer is not None and quantizer.get("bits") is not None
    checks += pruning_checks(weights, reported, cfg.get("pruner"), quantizing)
    checks += quantization_checks(weights, reported, quantizer)
    return {
        "ok": all(c["ok"] for c in checks),
        "checks": checks,
        "tolerance": {"recount": RECOUNT_TOLERANCE, "target_sparsity": TARGET_TOLERANCE},
    }


def failures(verified: dict) -> str:
    return "; ".join(
        f"{c['check']}: expected {c['expected']}, measured {c['measured']}" for c in verified["checks"] if not c["ok"]
    )


def verify_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="compress-sweeps verify", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a run folder with results.json, model.safetensors, .hydra/")
    args = parser.parse_args(argv)
    config_file = args.run_dir / ".hydra" / "config.yaml"
    for needed in (args.run_dir / RESULTS, args.run_dir / WEIGHTS, config_file):
        if not needed.is_file():
            parser.error(f"{needed} not found: is {args.run_dir} a finished run folder?")
    results = json.loads((args.run_dir / RESULTS).read_text())
    verified = verify(args.run_dir, OmegaConf.load(config_file), results)
    results["verified"] = verified
    if not verified["ok"]:
        results |= {"status": "failed", "error": f"verification failed: {failures(verified)}"}
    write_json_atomic(args.run_dir / RESULTS, results)
    for check in verified["checks"]:
        print(
            f"{'ok  ' if check['ok'] else 'FAIL'} {check['check']}: expected {check['expected']}, "
            f"measured {check['measured']}"
        )
    print("verified" if verified["ok"] else f"verification FAILED: {failures(verified)}")
    return 0 if verified["ok"] else 1
