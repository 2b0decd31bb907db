"""A tiny Hugging Face model saved with `save_pretrained`, so the hub loading code runs without the hub."""

from __future__ import annotations

from pathlib import Path

from helpers.data import WORDS


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
