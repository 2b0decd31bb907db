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


def write_tiny_llama(folder: Path, num_layers: int = 2) -> Path:
    """A randomly initialised Llama (hidden 64, 4 query / 2 key-value heads: grouped-query attention, FFN 128, tied
    embeddings) with the bundled MiniLM's tokenizer ([SEP] as its end-of-text token), saved like a hub model: ~8 MB."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from compress_sweeps.models.hf import minilm_path

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    tokenizer.eos_token = tokenizer.sep_token
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder
