"""`compress-sweeps wandb-sweep sweeps/<name>.yaml`: the same grid as a W&B sweep configuration, for W&B agents.

Each agent then runs `python -m compress_sweeps sweep=<name> key=value ...` (Hydra overrides via
`${args_no_hyphens}`), so the sweep file's fixed choices apply and each agent job is an ordinary single run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

from compress_sweeps.objectives import goal


def _parameter(key: str, value: str) -> dict:
    """One Hydra sweep value (`a,b,c`, `range(...)`, `choice(...)`, `interval(lo,hi)`) as a W&B parameter."""
    override = OverridesParser.create().parse_override(f"{key}={value}")
    if not override.is_sweep_override():
        return {"value": override.value()}
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        return {"min": sweep.start, "max": sweep.end}
    if isinstance(sweep, ChoiceSweep | RangeSweep):
        return {"values": [yaml.safe_load(v) for v in override.sweep_string_iterator()]}
    raise ValueError(f"sweep parameter {key}={value}: unsupported sweep type {type(sweep).__name__}")


def wandb_sweep_config(
    sweep_file: Path, method: str = "grid", metric: str = "eval/accuracy", grid: int | None = None
) -> dict:
    """Read `hydra.sweeper.params` of a sweep file and build the W&B sweep configuration.

    A W&B sweep is one grid: a sweep file with `hydra.sweeper.grids` (a union of grids) is exported one grid at a
    time, `grid` naming which (its keys join `params`, as in the Hydra sweep).
    """
    content = yaml.safe_load(Path(sweep_file).read_text()) or {}
    sweeper = (content.get("hydra") or {}).get("sweeper") or {}
    params, grids = sweeper.get("params") or {}, sweeper.get("grids") or []
    if not params:
        raise ValueError(
            f"{sweep_file}: no hydra.sweeper.params to translate (a sweep whose sweeper decides its jobs as it runs, "
            "like sweeps/plan.yaml, has no grid to export)"
        )
    if grids and (grid is None or not 0 <= grid < len(grids)):
        raise ValueError(
            f"{sweep_file} is a union of {len(grids)} grids (hydra.sweeper.grids) and a W&B sweep holds one: export "
            f"each with --grid 0..{len(grids) - 1}"
        )
    if grids:
        params = {**params, **grids[grid]}
    parameters = {key: _parameter(key, str(value)) for key, value in params.items()}
    if method == "grid" and any("min" in p for p in parameters.values()):
        raise ValueError("interval(...) parameters cannot be gridded: use --method random or bayes")
    name = Path(sweep_file).stem
    return {
        "name": name if not grids else f"{name}-grid{grid}",
        "method": method,
        "metric": {"name": metric, "goal": goal(metric)},
        "parameters": parameters,
        "command": ["${env}", "${interpreter}", "-m", "compress_sweeps", f"sweep={name}", "${args_no_hyphens}"],
    }


def wandb_sweep_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="compress-sweeps wandb-sweep", description=__doc__)
    parser.add_argument("sweep_file", type=Path, help="a file of sweeps/, e.g. sweeps/sparsity.yaml")
    parser.add_argument("--method", choices=["grid", "random", "bayes"], default="grid")
    parser.add_argument("--metric", default="eval/accuracy")
    parser.add_argument("--out", type=Path, default=None, help="default: wandb_sweep_<name>.yaml here")
    parser.add_argument("--grid", type=int, default=None, help="which of the sweep's hydra.sweeper.grids to export")
    args = parser.parse_args(argv)
    if not args.sweep_file.is_file():
        parser.error(f"no such file: {args.sweep_file}")
    try:
        config = wandb_sweep_config(args.sweep_file, args.method, args.metric, args.grid)
    except ValueError as error:
        parser.error(str(error))
    out = args.out or Path(f"wandb_sweep_{args.sweep_file.stem}.yaml")
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"wrote {out}; start it with: wandb sweep {out}   then on each machine: wandb agent <sweep id>")
    return 0
