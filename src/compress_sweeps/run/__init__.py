"""Per-run infrastructure: build and check a run's parts, results and model files, checkpoints, job identity,
threads and seeding, measurement and the verification gate."""
