"""A short-text task from bundled data: the first sentence of each BBC News article, as CSVs for `task=text_files`.

The same articles, topics and train/validation split as `task=bbc_news` (1,780 / 445, stratified, split_seed 0), but
one sentence each: 28 tokens on average with MiniLM's tokenizer (max 55), where `task=bbc_news` fills all 128.

    PYTHONPATH=src python bench/bbc_first_sentences.py outputs/bbc_first_sentences   # writes train.csv, dev.csv
    python -m compress_sweeps task=text_files task.train_file=outputs/bbc_first_sentences/train.csv \\
        task.validation_file=outputs/bbc_first_sentences/dev.csv
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

import datasets

from compress_sweeps.tasks import bbc_news

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def first_sentence(article: str) -> str:
    """The first sentence of the body (an article is its title line, a blank line, then the body's paragraphs)."""
    title, _, body = article.partition("\n")
    paragraph = (body.strip() or title).split("\n", 1)[0]
    return SENTENCE_END.split(paragraph, maxsplit=1)[0].strip()


def write_csvs(folder: str | Path) -> tuple[Path, Path]:
    """`folder/train.csv` and `folder/dev.csv` (columns text, label: the topic name)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    task = bbc_news()
    paths = []
    for split, name in ((task.train, "train.csv"), (task.validation, "dev.csv")):
        rows = datasets.Dataset.from_dict(
            {"text": [first_sentence(t) for t in split["text"]], "label": [task.label_names[i] for i in split["label"]]}
        )
        rows.to_csv(str(folder / name), index=False)
        paths.append(folder / name)
    return paths[0], paths[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="where to write train.csv and dev.csv")
    args = parser.parse_args()
    train, dev = write_csvs(args.folder)
    from transformers import AutoTokenizer

    from compress_sweeps.models.hf import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    lengths = [len(ids) for ids in tokenizer(list(datasets.Dataset.from_csv(str(train))["text"]))["input_ids"]]
    print(f"{train} and {dev}: {len(lengths)} training sentences, MiniLM tokens per sentence: ", end="")
    print(f"mean {statistics.fmean(lengths):.1f}, median {statistics.median(lengths):.0f}, max {max(lengths)}")


if __name__ == "__main__":
    main()
