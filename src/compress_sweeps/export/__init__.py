"""Exports after finalize (config group `export`): the real int8 model, evaluated and timed against fp32."""
