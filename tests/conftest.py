"""Shared fixtures (injected by name, never imported): an isolated environment (no network, W&B offline into a temp
folder), a tiny BERT and a tiny Llama saved with `save_pretrained` so the Hugging Face loading code runs without the
hub, tiny text files and finished run folders. Plain helpers live in tests/helpers/
(`from helpers import compose_cfg, ...`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import starts_python, text_rows, write_csv, write_tiny_bert, write_tiny_llama
from omegaconf import OmegaConf

from compress_sweeps.models import ConvNet
from compress_sweeps.models.runs import save_model
from compress_sweeps.run import artifacts


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test: outputs, caches and W&B files under tmp_path; hub access off."""
    monkeypatch.setenv("COMPRESS_SWEEPS_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("COMPRESS_SWEEPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "wandb").mkdir()
    yield


@pytest.fixture(autouse=True)
def python_subprocesses_are_marked(request, monkeypatch):
    """An unmarked test that starts a Python subprocess fails: each one costs seconds of imports, and `make test`
    (the README's command) stays fast only if such tests carry `@pytest.mark.runs`, which `make test-runs` runs.
    Other programs (W&B's service binary) start as usual."""
    if request.node.get_closest_marker("runs") is not None:
        yield
        return
    start = subprocess.Popen.__init__

    def guarded(self, args, *rest, **options):
        if starts_python(args):
            pytest.fail(f"{request.node.nodeid} starts a Python subprocess ({args!r}): mark it @pytest.mark.runs")
        start(self, args, *rest, **options)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
    yield


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """One tiny BERT folder for the whole session (saving it takes about a second)."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """One tiny random Llama (grouped-query attention, tied embeddings, ~8 MB) for the whole session."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture
def lm_texts(tmp_path) -> tuple[Path, Path]:
    """A training and a validation .txt file of topic words (a few hundred tokens each): task=lm_text's own files."""
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text(" ".join(row["text"] + "." for row in text_rows(60)))
    valid.write_text(" ".join(row["text"] + "." for row in text_rows(20, seed=1)))
    return train, valid


@pytest.fixture
def text_csvs(tmp_path) -> tuple[Path, Path]:
    """A train CSV of 48 and a validation CSV of 24 eight-word texts, three topics in turn."""
    return write_csv(tmp_path / "train.csv", text_rows(48)), write_csv(tmp_path / "dev.csv", text_rows(24, seed=1))


@pytest.fixture
def ragged_text_csvs(tmp_path) -> tuple[Path, Path]:
    """Texts of 2 to 13 words (4 to 15 tokens): batches padded to their longest example differ in width."""
    train = write_csv(tmp_path / "ragged_train.csv", text_rows(48, words=(2, 13)))
    return train, write_csv(tmp_path / "ragged_dev.csv", text_rows(24, seed=1, words=(2, 13)))


@pytest.fixture
def run_folders(tmp_path) -> dict[str, str]:
    """`pruned_run`: a finished run whose results say it was pruned; `failed_run`: one that failed;
    `three_label_run`: a CNN with 3 labels."""
    pruned, failed = tmp_path / "pruned_run", tmp_path / "failed_run"
    failed.mkdir()
    (failed / artifacts.RESULTS).write_text(json.dumps({"status": "failed", "error": "KeyboardInterrupt: "}))
    unverified = tmp_path / "unverified_run"
    unverified.mkdir()
    verdict = {"status": "completed", "verified": {"ok": False}, "compression": {}}
    (unverified / artifacts.RESULTS).write_text(json.dumps(verdict))
    (tmp_path / "a_file").write_text("not a folder")
    cnn = OmegaConf.create({"_target_": "compress_sweeps.models.ConvNet", "channels": [4], "hidden": 8})
    three = save_model(ConvNet(3, channels=[4], hidden=8), tmp_path / "three_label_run", None, cnn, 3).parent
    save_model(ConvNet(10, channels=[4], hidden=8), pruned, None, cnn, 10)
    compression = {"sparsity": 0.5, "pattern": "1x1", "bits": 32}
    (pruned / artifacts.RESULTS).write_text(json.dumps({"status": "completed", "compression": compression}))
    return {
        "pruned_run": str(pruned),
        "failed_run": str(failed),
        "unverified_run": str(unverified),
        "three_label_run": str(three),
        "a_file": str(tmp_path / "a_file"),
    }
