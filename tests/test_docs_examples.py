"""docs/extending.md shows the shipped example files verbatim, so the guide cannot drift from code that is tested."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["src/compress_sweeps/pruners/oneshot/ria.py", "conf/pruner/method/ria.yaml", "tests/test_ria.py"]


def test_the_one_shot_example_is_the_shipped_method():
    guide = (ROOT / "docs" / "extending.md").read_text()
    section = guide.split("## A one-shot pruning method", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:python|yaml)\n(.*?)\n```", section, flags=re.S)
    assert blocks[:3] == [(ROOT / path).read_text().strip() for path in SHIPPED]
