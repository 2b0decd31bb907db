"""Tasks: where the data comes from. Each config in conf/task/ points at one of these builders.

Each builder declares the data it gives beside it (`@builds("task", Kind(...))`, compress_sweeps/kinds.py), and
its own checks beyond value types (text_files reads its files' columns, cells and labels), which the pre-launch
pass runs before anything loads.
"""

from __future__ import annotations

from compress_sweeps.tasks.bbc_news import bbc_news
from compress_sweeps.tasks.glue import glue
from compress_sweeps.tasks.images import ImageTask, digits, mnist5k
from compress_sweeps.tasks.lm_text import LanguageModelingTask, lm_text
from compress_sweeps.tasks.text import TextTask
from compress_sweeps.tasks.text_files import text_files

__all__ = [
    "ImageTask",
    "LanguageModelingTask",
    "TextTask",
    "bbc_news",
    "digits",
    "glue",
    "lm_text",
    "mnist5k",
    "text_files",
]
