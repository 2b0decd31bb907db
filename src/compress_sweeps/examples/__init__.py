"""Runnable examples: `python -m compress_sweeps.examples.<name> --help`."""
