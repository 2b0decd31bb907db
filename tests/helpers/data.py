"""Tiny labelled text data: topic-worded rows, CSV files of them, and a local folder laid out like the hub's GLUE."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pandas as pd

TOPICS = ["sport", "tech", "politics"]
WORDS = {
    "sport": "match goal team player win season league coach",
    "tech": "software chip phone computer internet data code network",
    "politics": "minister vote party election government law policy debate",
}


def text_rows(n: int, seed: int = 0, words: tuple[int, int] = (8, 8)) -> list[dict]:
    """`n` texts of `words` (min, max) words each, labelled by topic in turn."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        vocabulary = WORDS[topic].split()
        count = words[0] if words[0] == words[1] else rng.randint(*words)
        rows.append({"text": " ".join(rng.choice(vocabulary) for _ in range(count)), "label": topic})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    """`rows` as a CSV file with a header of the first row's keys."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_local_glue(root: Path) -> Path:
    """A local folder laid out like the hub's nyu-mll/glue repo (README configs + parquet files per task)."""
    (root / "sst2").mkdir(parents=True)
    rows = pd.DataFrame({"sentence": ["good film", "bad film", "great", "awful"] * 3, "label": [1, 0, 1, 0] * 3})
    rows["idx"] = range(len(rows))
    for split in ("train", "validation"):
        rows.to_parquet(root / "sst2" / f"{split}-00000-of-00001.parquet")
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: sst2\n  data_files:\n"
        "  - split: train\n    path: sst2/train-*\n  - split: validation\n    path: sst2/validation-*\n"
        "dataset_info:\n- config_name: sst2\n  features:\n  - name: sentence\n    dtype: string\n"
        "  - name: label\n    dtype:\n      class_label:\n        names:\n"
        "          '0': negative\n          '1': positive\n"
        "  - name: idx\n    dtype: int32\n---\n"
    )
    return root
