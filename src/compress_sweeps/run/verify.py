"""The verification gate: re-count a finished run from its saved files and check them against what it promised.

Independent of the methods' own bookkeeping and of the config: it reloads `model.safetensors`, re-counts sparsity
per layer and overall and the non-zero parameters, and checks every promise in `results.json` ->
`compression.spec` (each method's `CompressionSpec`): each pruned weight's zeros follow its pattern, each group of
weights reaches its target sparsity, each quantized weight holds at most 2^bits values per level group and, for
uniform quantizers, lies on an evenly spaced grid; a method that takes whole units out (`StructurePromise`) gets its
saved model rebuilt by the project's loader (`model_config.yaml` + `slim_structure.json` + `model.safetensors`,
strict), its parameters and FLOPs re-counted against the dense model that `model_config.yaml` builds (FLOPs by
FlopCounterMode on inputs of the recorded example shapes), and the part removed checked against its target. A new
method gets all of this by describing itself (hooks.py, `Describes`). A mismatch beyond the tolerances below marks
the run failed, naming the check.

`compress-sweeps verify <run folder>` runs it on any finished run without changing it (exit 1 on a mismatch, 2 for
a folder it cannot read); `--record` also writes the outcome into results.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from compress_sweeps.models.costs import example_inputs
from compress_sweeps.models.runs import WEIGHTS, architecture, load_saved, load_weights, saved_num_labels
from compress_sweeps.run.artifacts import RESULTS, write_json_atomic
from compress_sweeps.run.shapes import costs
from compress_sweeps.spec import CompressionSpec, QuantizationPromise, SparsityPromise, StructurePromise
from compress_sweeps.weights.grid import grid_levels, group_rows
from compress_sweeps.weights.patterns import parse_pattern

RECOUNT_TOLERANCE = 1e-6  # reported vs re-counted figures: the same numbers, up to float rounding
TARGET_TOLERANCE = 0.005  # achieved vs promised sparsity over a group of weights: +-0.5 percentage points
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _check(name: str, expected, measured, ok: bool) -> dict:
    return {"check": name, "expected": expected, "measured": measured, "ok": bool(ok)}


def sparsity_checks(weights: Mapping[str, torch.Tensor], promise: SparsityPromise, quantized: bool) -> list[dict]:
    """The promised target and patterns, re-counted on the promise's weights.

    Quantization can only add zeros (small weights rounding to 0), so with a quantizer in the run the target is a
    floor, and a block pattern is checked as whole zero blocks reaching the target (N:M must hold exactly).
    """
    missing = sorted(set(promise.patterns) - set(weights))
    if missing:
        return [_check("pruned weights saved", "all", f"missing {missing[:5]}", False)]
    layers = {name: weights[name] for name in promise.patterns}
    numel = sum(w.numel() for w in layers.values())
    sparsity = sum(int((w == 0).sum()) for w in layers.values()) / numel if numel else 0.0
    checks = []
    target = promise.target
    if target is not None:
        ok = sparsity >= target - TARGET_TOLERANCE if quantized else abs(sparsity - target) <= TARGET_TOLERANCE
        checks.append(_check("target_sparsity", target, sparsity, ok))
    for label in sorted(set(promise.patterns.values())):
        pattern = parse_pattern(label)
        group = {name: w for name, w in layers.items() if promise.patterns[name] == label}
        if quantized and target is not None and not pattern.keeps_holding_with_more_zeros:
            counts = [pattern.zero_units(w) for w in group.values()]
            units = sum(z for z, _ in counts) / sum(n for _, n in counts)
            checks.append(_check(f"pattern {label}", target, units, units >= target - TARGET_TOLERANCE))
        else:
            bad = [name for name, w in group.items() if not pattern.holds(w)]
            checks.append(_check(f"pattern {label}", "holds in every layer", bad or "all layers", not bad))
    return checks


def quantization_checks(weights: Mapping[str, torch.Tensor], promise: QuantizationPromise) -> list[dict]:
    """At most 2^bits values per level group in every quantized weight, on a uniform grid where promised."""
    missing = sorted(set(promise.weights) - set(weights))
    if missing or not promise.weights:
        measured = f"missing {missing[:5]}" if missing else "none"
        return [_check("quantized weights saved", ">= 1, all", measured, False)]
    limit, group = 2**promise.bits, promise.group
    worst, bad = 0, {}
    for name in promise.weights:
        levels, grid = grid_levels(group_rows(weights[name].float(), group))
        worst = max(worst, levels)
        if levels > limit or (promise.uniform and (grid is None or grid > limit)):
            bad[name] = f"{levels} levels" if grid is None or not promise.uniform else f"{levels} levels, grid {grid}"
    grid = "on a uniform grid " if promise.uniform else ""
    expected = f"<= {limit} values {grid}per {group or 'tensor'}"
    return [_check(f"{len(promise.weights)} weights at {promise.bits} bits", expected, bad or worst, not bad)]


def structure_checks(run_dir: Path, reported: Mapping, promise: StructurePromise) -> list[dict]:
    """The saved model rebuilt from the run folder alone; its parameters and FLOPs (whole model and prunable part,
    before and after) re-counted and compared with `compression.structure`; the part removed against the target."""
    folder = str(run_dir)
    try:
        dense = architecture(folder, saved_num_labels(folder))  # the model the method attached to
        saved = load_saved(copy.deepcopy(dense), folder)
    except Exception as error:  # any reason the files do not rebuild the model is the finding
        found = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
        return [_check("saved model rebuilds", "at the recorded shapes, strict", found, False)]
    checks = [_check("saved model rebuilds", "at the recorded shapes, strict", "loaded", True)]
    if not promise.example or not promise.scope:
        return checks + [_check("structure promise", "scope and example shapes", "missing", False)]
    counted = costs(saved, dense, [promise], example_inputs(promise.example))
    structure = reported.get("structure") or {}
    for metric in ("params", "flops"):
        for key, value in counted[metric].items():
            claimed = (structure.get(metric) or {}).get(key)
            ok = claimed is not None and abs(claimed - value) <= RECOUNT_TOLERANCE * max(1.0, abs(value))
            checks.append(_check(f"{metric} {key}", claimed, value, ok))
    params = counted["params"]
    if promise.removes_units:
        removed, low = counted["removed"][promise.target_metric], promise.target - promise.tolerance
        ok = low - RECOUNT_TOLERANCE <= removed <= promise.target + RECOUNT_TOLERANCE
        expected = f"{low:.4f} .. {promise.target:g}"
        checks.append(_check(f"prunable {promise.target_metric} removed", expected, removed, ok))
        smaller = params["model_after"] < params["model_before"]
        checks.append(_check("units cut out", f"< {params['model_before']} params", params["model_after"], smaller))
    else:
        same = params["model_after"] == params["model_before"]
        checks.append(_check("shapes kept", f"{params['model_before']} params", params["model_after"], same))
    return checks


def recount_checks(weights: Mapping[str, torch.Tensor], reported: dict) -> list[dict]:
    """Per-layer and overall sparsity and the non-zero parameters, as results.json reports them."""
    checks = []
    for name, sparsity in reported["layers"].items():
        recount = float((weights[name] == 0).float().mean()) if name in weights else None
        if recount is None or abs(recount - sparsity) > RECOUNT_TOLERANCE:
            checks.append(_check(f"layer {name} sparsity", sparsity, recount, False))
    counted = len(reported["layers"]) - len(checks)
    checks.append(_check("layers re-counted", len(reported["layers"]), counted, not checks))
    layers = [weights[n] for n in reported["layers"] if n in weights]
    numel = sum(w.numel() for w in layers)
    overall = sum(int((w == 0).sum()) for w in layers) / numel if numel else 0.0
    ok = abs(overall - reported["sparsity"]) <= RECOUNT_TOLERANCE
    checks.append(_check("sparsity", reported["sparsity"], overall, ok))
    params = list({id(t): t for n, t in weights.items() if not n.endswith(BUFFERS)}.values())  # a tied one once
    nonzero = sum(int(t.count_nonzero()) for t in params)
    checks.append(_check("nonzero_params", reported["nonzero_params"], nonzero, nonzero == reported["nonzero_params"]))
    return checks


def verify(run_dir: Path, results: dict) -> dict:
    """All checks for one run; `{"ok": ..., "checks": [...], "tolerance": ...}` for results.json."""
    weights = load_weights(Path(run_dir) / WEIGHTS)  # tied names (an LM's lm_head) are their owner's tensor
    reported = results["compression"]
    checks = recount_checks(weights, reported)
    specs = [CompressionSpec.from_dict(s) for s in reported.get("spec", [])]
    quantized = any(s.quantization is not None for s in specs)
    for spec in specs:
        for promise in spec.sparsity:
            checks += [c | {"method": spec.method} for c in sparsity_checks(weights, promise, quantized)]
        if spec.quantization is not None:
            checks += [c | {"method": spec.method} for c in quantization_checks(weights, spec.quantization)]
        if spec.structure is not None:
            checks += [c | {"method": spec.method} for c in structure_checks(run_dir, reported, spec.structure)]
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
    """0: verified; 1: a check failed; 2: the folder cannot be read as a finished run."""
    parser = argparse.ArgumentParser(prog="compress-sweeps verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder with results.json and model.safetensors")
    parser.add_argument("--record", action="store_true", help="write the outcome into the folder's results.json")
    args = parser.parse_args(argv)
    try:
        results = json.loads((args.run_dir / RESULTS).read_text())
        if not (args.run_dir / WEIGHTS).is_file():
            raise FileNotFoundError(f"{args.run_dir / WEIGHTS} not found")
        verified = verify(args.run_dir, results)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {args.run_dir} is not a readable finished run folder ({type(error).__name__}: {error})",
              file=sys.stderr)  # fmt: skip
        return 2
    for check in verified["checks"]:
        print(f"{'ok  ' if check['ok'] else 'FAIL'} {check['check']}: expected {check['expected']}, "
              f"measured {check['measured']}")  # fmt: skip
    print("verified" if verified["ok"] else f"verification FAILED: {failures(verified)}")
    if args.record:
        results["verified"] = verified
        if not verified["ok"]:
            results |= {"status": "failed", "error": f"verification failed: {failures(verified)}"}
        try:
            write_json_atomic(args.run_dir / RESULTS, results)
        except OSError as error:
            print(f"error: cannot record the outcome in {args.run_dir / RESULTS} ({error.strerror})", file=sys.stderr)
            return 2
    return 0 if verified["ok"] else 1
