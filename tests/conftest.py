"""Shared fixtures: an isolated environment (no network, W&B offline into a temp folder), Hydra composition,
and a tiny BERT saved with `save_pretrained` so the Hugging Face loading code runs without the hub."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from compress_sweeps.config import config_dir
from compress_sweeps.models import ConvNet
from compress_sweeps.models.runs import save_model
from compress_sweeps.run import artifacts

CONF = config_dir()
TOPICS = ["sport", "tech", "politics"]
CNN_SMOKE = ["task=digits", "model=cnn", "trainer=smoke", "logger=none", "trainer.progress=false"]  # seconds
WORDS = {
    "sport": "match goal team player win season league coach",
    "tech": "software chip phone computer internet data code network",
    "politics": "minister vote party election government law policy debate",
}


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


def compose_cfg(overrides: list[str], output_dir: Path | None = None, keep_hydra: bool = False) -> DictConfig:
    """The composed train config with Hydra's runtime config set, as `python -m compress_sweeps` would see it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    if not keep_hydra:
        with open_dict(cfg):
            del cfg["hydra"]  # as in a real run: the job's config holds no hydra node
    return cfg


def write_tiny_bert(folder: Path, num_layers: int = 2) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) and a word-level tokenizer, saved like a hub model."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w for s in WORDS.values() for w in s.split()})
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def text_rows(n: int, seed: int = 0, words: tuple[int, int] = (8, 8)) -> list[dict]:
    """`n` texts of `words` (min, max) words each, labelled by topic in turn."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        vocabulary = WORDS[topic].split()
        count = words[0] if words[0] == words[1] else rng.randint(*words)
        rows.append({"text": " ".join(rng.choice(vocabulary) for _ in range(count)), "label": topic})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def text_csvs(tmp_path) -> tuple[Path, Path]:
    return write_csv(tmp_path / "train.csv", text_rows(48)), write_csv(tmp_path / "dev.csv", text_rows(24, seed=1))


@pytest.fixture
def ragged_text_csvs(tmp_path) -> tuple[Path, Path]:
    """Texts of 2 to 13 words (4 to 15 tokens): batches padded to their longest example differ in width."""
    train = write_csv(tmp_path / "ragged_train.csv", text_rows(48, words=(2, 13)))
    return train, write_csv(tmp_path / "ragged_dev.csv", text_rows(24, seed=1, words=(2, 13)))


def tiny_text_overrides(text_csvs: tuple[Path, Path], model: Path) -> list[str]:
    """Overrides for a text run on the CSV fixtures with a local Hugging Face model (e.g. the tiny BERT)."""
    return [
        "task=text_files",
        f"task.train_file={text_csvs[0]}",
        f"task.validation_file={text_csvs[1]}",
        "task.max_length=16",
        "model=hf",
        f"model.name_or_path={model}",
    ]


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
