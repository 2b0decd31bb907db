"""Hydra plugin package of compress_sweeps: the reference sweeper (`hydra/sweeper=reference`)."""
