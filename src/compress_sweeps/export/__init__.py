"""Exports after finalize (config group `export`): the real int8 model, evaluated and timed against fp32."""

from compress_sweeps.export.int8 import Int8Export, NoExport

__all__ = ["Int8Export", "NoExport"]
