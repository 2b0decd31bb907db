"""compress_sweeps: prune, quantize and distill models, one Hydra-composed run per job, many jobs per sweep.

Importing the package registers the OmegaConf resolvers its configs use (`cs_job_dir`, `cs_identity_free`,
`cs_now`), so Hydra's compose API sees the same config as the command line, in any process (launcher workers too).
"""

from compress_sweeps.run.identity import register_resolvers

__version__ = "0.1.0"

register_resolvers()
