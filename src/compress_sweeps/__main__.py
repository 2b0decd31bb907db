"""`python -m compress_sweeps ...`: the same as the `compress-sweeps` console script (see cli.py)."""

from compress_sweeps.cli import cli

if __name__ == "__main__":
    cli()
