"""Tasks: where the data comes from. Each config in conf/task/ points at one of these builders."""

from compress_sweeps.tasks.bbc_news import bbc_news
from compress_sweeps.tasks.glue import glue
from compress_sweeps.tasks.images import ImageTask, digits, mnist5k
from compress_sweeps.tasks.text import TextTask
from compress_sweeps.tasks.text_files import text_files

__all__ = ["ImageTask", "TextTask", "bbc_news", "digits", "glue", "mnist5k", "text_files"]
