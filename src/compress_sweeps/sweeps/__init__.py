"""The multirun side: stable job ids and folders, resume, failure isolation, sweep summary and report."""

from compress_sweeps.sweeps.jobs import completed_result, job_dir_name, job_id, register_resolvers
from compress_sweeps.sweeps.summary import SweepSummary, summarize

__all__ = ["SweepSummary", "completed_result", "job_dir_name", "job_id", "register_resolvers", "summarize"]
