"""Tasks load the shipped data with fixed splits; text tasks tokenize once and reuse the on-disk cache."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import TOPICS, text_rows, write_local_glue
from transformers import AutoTokenizer

from compress_sweeps.errors import ConfigError
from compress_sweeps.tasks import bbc_news, digits, glue, mnist5k, text_files


def test_bbc_news_split_is_fixed_and_stratified():
    task = bbc_news()
    assert task.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert (len(task.train), len(task.validation)) == (1780, 445)
    again = bbc_news()
    assert task.validation["text"][:5] == again.validation["text"][:5]
    counts = pd.Series(task.validation["label"]).value_counts(normalize=True)
    assert counts.min() > 0.15  # every topic is represented in validation


def test_bbc_news_caps_and_seeds():
    task = bbc_news(max_train_examples=10, max_eval_examples=5, split_seed=1)
    assert (len(task.train), len(task.validation)) == (10, 5)
    with pytest.raises(ValueError, match="validation_fraction"):
        bbc_news(validation_fraction=1.5)


@pytest.mark.parametrize(("builder", "shape", "size"), [(digits, (1, 8, 8), 1797), (mnist5k, (1, 28, 28), 5000)])
def test_image_tasks(builder, shape, size):
    task = builder()
    train, val = task.datasets()
    assert task.num_labels == 10
    assert len(train) + len(val) == size
    row = train[0]
    assert tuple(row["pixel_values"].shape) == shape and row["labels"].dtype.is_floating_point is False
    assert abs(float(train.pixel_values.mean())) < 1e-3  # standardised with the training statistics


def test_text_task_tokenizes_once_into_the_cache(tiny_bert, text_csvs, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    task = text_files(str(text_csvs[0]), str(text_csvs[1]), max_length=16, cache_dir=str(tmp_path / "c"))
    assert task.label_names == sorted(TOPICS)
    train, val = task.datasets(tokenizer)
    assert set(train.rows.format["columns"]) >= {"input_ids", "attention_mask", "labels", "idx"}
    assert train[0]["input_ids"].shape[0] == train.lengths[0] == 10  # unpadded: [CLS] + 8 words + [SEP]
    cached = sorted((tmp_path / "c" / "tokenized").rglob("*.arrow"))
    assert len(cached) == 2
    stamps = [p.stat().st_mtime_ns for p in cached]
    task.datasets(tokenizer)  # second call: read from the cache, nothing rewritten
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_text_files_label_names_and_errors(tmp_path, text_csvs):
    task = text_files(str(text_csvs[0]), str(text_csvs[1]), label_names=["tech", "sport", "politics"])
    assert task.label_names == ["tech", "sport", "politics"]
    assert task.train[0]["label"] == ["tech", "sport", "politics"].index(text_rows(1)[0]["label"])
    for kwargs, key in [
        ({"label_names": ["sport"]}, "task.label_names"),
        ({"train_file": str(tmp_path / "missing.csv")}, "task.train_file"),
        ({"text_columns": ["body"]}, "task.text_columns"),
    ]:
        with pytest.raises(ConfigError) as caught:  # the builder runs the same checks as the pre-launch pass
            text_files(**({"train_file": str(text_csvs[0]), "validation_file": str(text_csvs[1])} | kwargs))
        assert caught.value.key == key


def test_text_files_reads_jsonl_and_parquet(tmp_path):
    frame = pd.DataFrame(text_rows(12))
    for suffix in (".jsonl", ".parquet"):
        train, dev = tmp_path / f"train{suffix}", tmp_path / f"dev{suffix}"
        for path in (train, dev):
            frame.to_json(path, orient="records", lines=True) if suffix == ".jsonl" else frame.to_parquet(path)
        assert len(text_files(str(train), str(dev)).train) == 12


def test_glue_loader_runs_on_a_local_copy_offline(tmp_path, tiny_bert):
    task = glue(name="sst2", path=str(write_local_glue(tmp_path / "glue")), max_eval_examples=4)
    assert task.label_names == ["negative", "positive"]
    assert (len(task.train), len(task.validation)) == (12, 4)
    train, _ = task.datasets(AutoTokenizer.from_pretrained(tiny_bert))
    assert int(train[0]["labels"]) in (0, 1)


def test_glue_rejects_unknown_task_names():
    with pytest.raises(ConfigError) as caught:
        glue(name="sst3")
    assert (caught.value.key, caught.value.problem) == ("task.name", "is unknown")
