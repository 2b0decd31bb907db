"""Your own text files (task=text_files) are read and checked before anything loads: each bad file fails with one
message naming the key; label problems can be turned into warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_input_checks import check_config
from helpers import compose_cfg, text_rows, write_csv

from compress_sweeps.errors import ConfigError

# your own text files (task=text_files): read and checked before anything loads; `{name}` are files made below
FILES = {
    "missing train file": ({"train_file": "missing.csv"}, "task.train_file", "does not exist"),
    "empty file": ({"train_file": "empty.csv"}, "task.train_file", "is empty"),
    "header only": ({"validation_file": "header_only.csv"}, "task.validation_file", "has no examples"),
    "not UTF-8": ({"train_file": "latin1.csv"}, "task.train_file", "is not UTF-8"),
    "unknown format": (
        {"train_file": "notes.txt", "validation_file": "notes.txt"},
        "task.train_file",
        "is not a known",
    ),
    "formats differ": ({"validation_file": "dev.json"}, "task.validation_file", "differs"),
    "a folder": ({"train_file": "."}, "task.train_file", "is not a known format"),
    "no label column": ({"train_file": "no_label.csv"}, "task.label_column", "is not a column"),
    "no text column": ({"text_columns": "[sentence]"}, "task.text_columns", "is not a column"),
    "three text columns": ({"text_columns": "[a,b,c]"}, "task.text_columns", "is out of range"),
    "unseen validation label": ({"validation_file": "dev_new_label.csv"}, "task.validation_file", "has labels never"),
    "one training label": ({"train_file": "one_label.csv"}, "task.train_file", "has one label only"),
    "label_names short": ({"label_names": "[sport,tech]"}, "task.label_names", "is out of range"),
    "unknown label check": ({"label_check": "lenient"}, "task.label_check", "is unknown"),
}


@pytest.fixture
def text_data(tmp_path) -> Path:
    """A good train/dev pair and the bad files of FILES."""
    folder = tmp_path / "data"
    folder.mkdir()
    rows = text_rows(12)
    write_csv(folder / "train.csv", rows)
    write_csv(folder / "dev.csv", text_rows(6, seed=1))
    (folder / "empty.csv").write_text("")
    (folder / "header_only.csv").write_text("text,label\n")
    (folder / "latin1.csv").write_bytes("text,label\ncaf\xe9 match,sport\nvote,politics\n".encode("latin-1"))
    (folder / "notes.txt").write_text("match goal\n")
    (folder / "dev.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    write_csv(folder / "no_label.csv", [{"text": row["text"]} for row in rows])
    write_csv(folder / "dev_new_label.csv", [*rows, {"text": "rain and sun", "label": "weather"}])
    write_csv(folder / "one_label.csv", [row for row in rows if row["label"] == "sport"])
    return folder


def text_files_overrides(folder: Path, changes: dict[str, str]) -> list[str]:
    settings = {"train_file": "train.csv", "validation_file": "dev.csv"} | changes
    return ["task=text_files"] + [
        f"task.{key}={folder / value if key.endswith('_file') else value}" for key, value in settings.items()
    ]


@pytest.mark.parametrize(("changes", "key", "problem"), list(FILES.values()), ids=list(FILES))
def test_bad_text_files_fail_before_anything_loads(text_data, changes, key, problem, tmp_path):
    cfg = compose_cfg(text_files_overrides(text_data, changes))
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    error = caught.value
    assert error.key == key and error.problem.startswith(problem), str(error)
    assert "\n" not in str(error)
    assert not (tmp_path / "cache").exists()  # nothing read into a cache, nothing half-written


def test_label_problems_can_be_turned_into_warnings(text_data):
    cfg = compose_cfg(text_files_overrides(text_data, {"validation_file": "dev_new_label.csv", "label_check": "warn"}))
    [warning] = check_config(cfg)  # the run logs it and records it in results.json (`warnings`)
    assert warning.startswith(f"task.validation_file={text_data / 'dev_new_label.csv'} has labels never seen")
