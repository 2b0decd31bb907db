"""Plain test helpers (no fixtures): Hydra composition, tiny text data, a tiny saved BERT,
which subprocesses a test starts.

Test modules import them from here (`from helpers import compose_cfg, ...`); fixtures live in tests/conftest.py and
are injected by name, never imported, so nothing imports conftest (tests/test_suite_layout.py checks that).
"""

from __future__ import annotations

from helpers.config import CNN_SMOKE, CONF, compose_cfg, tiny_text_overrides
from helpers.data import TOPICS, WORDS, text_rows, write_csv, write_local_glue
from helpers.models import write_tiny_bert, write_tiny_llama
from helpers.processes import starts_python

__all__ = [
    "CNN_SMOKE",
    "CONF",
    "TOPICS",
    "WORDS",
    "compose_cfg",
    "starts_python",
    "text_rows",
    "tiny_text_overrides",
    "write_csv",
    "write_local_glue",
    "write_tiny_bert",
    "write_tiny_llama",
]
