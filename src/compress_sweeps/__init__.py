"""compress_sweeps: prune, quantize and distill models, one Hydra-composed run per job, many jobs per sweep."""

__version__ = "0.1.0"
