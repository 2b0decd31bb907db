"""The planner on a causal LM (issue 29): the decoder's cost family (key/value head groups and gated FFN widths),
the size of a tied head in the int8 files, and a whole plan on a tiny random Llama that picks the lowest perplexity
within the budget."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from compress_sweeps.planner.families import TransformerBlocks, family_of
from compress_sweeps.planner.measure import predicted_mb
from compress_sweeps.planner.runtimes import RUNTIMES


@pytest.fixture
def llama(tiny_llama):
    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval()


def tokens(batch: int = 4, length: int = 16) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, 1000, (batch, length)), "attention_mask": torch.ones(batch, length).long()}


def test_a_decoder_is_timed_as_blocks_of_key_value_groups_and_ffn_widths(llama):
    family = family_of(llama, tokens())
    assert isinstance(family, TransformerBlocks) and family.signature()["family"] == "decoder"
    assert family.terms(llama) == [(2, 128), (2, 128)]  # 2 key/value heads (each with 2 query heads), FFN 128
    probes = family.probes()
    assert {"dense", "zero", "heads=1", "heads=2", "ffn=64"} <= set(probes)
    one_group, _ = probes["heads=1"]
    attention = one_group.model.layers[0].self_attn
    assert attention.k_proj.out_features == 16 and attention.q_proj.out_features == 32  # the group's query heads too
    zero, _ = probes["zero"]
    assert len(zero.model.layers) == 0 and zero(**tokens()).logits.shape == (4, 16, llama.config.vocab_size)
    shaped = family.build([(1, 32)])
    assert family.terms(shaped) == [(1, 32)] and shaped.config.num_hidden_layers == 1
    assert shaped(**tokens()).logits.shape == (4, 16, llama.config.vocab_size)


def test_a_tied_head_is_counted_twice_in_the_int8_file_once_in_fp32(llama):
    """The int8 exports keep the embedding in fp32 for the lookup and add an int8 copy for the head's MatMul."""
    embedding = llama.model.embed_tokens.weight.numel()
    linear = sum(m.weight.numel() for m in llama.model.layers.modules() if isinstance(m, torch.nn.Linear))
    int8_mb = predicted_mb(llama, "fp32") + (embedding - 3 * linear) / 2**20  # blocks' weights 4 -> 1 byte; head +1
    assert predicted_mb(llama, "int8_dynamic") == pytest.approx(int8_mb)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dynamic.onnx"
        RUNTIMES["int8_dynamic"].build(llama, tokens(), path, 1)
        assert predicted_mb(llama, "int8_dynamic") == pytest.approx(path.stat().st_size / 2**20, rel=0.05)


@pytest.mark.runs
def test_a_plan_on_a_causal_lm_answers_with_the_lowest_perplexity_within_budget(tmp_path, tiny_llama, lm_texts):
    """The whole plan on a tiny Llama with a size budget (timings of a 7 ms model are noise on a shared machine):
    screening, rung 1, finalists with and without logit KD from the dense LM, re-timing; the ranking goes the way
    perplexity gets better."""
    sweep = tmp_path / "sweep"
    args = [
        sys.executable, "-m", "compress_sweeps", "-m", "sweep=plan", "task=lm_text",
        f"task.train_file={lm_texts[0]}", f"task.validation_file={lm_texts[1]}", "task.block_size=16",
        "task.max_eval_blocks=8", "model=hf_causal", f"model.name_or_path={tiny_llama}", "logger=none",
        "trainer=smoke", "trainer.progress=false", "plan.size_mb=7.65", "plan.margin=0",
        "plan.runtimes=[fp32]", "plan.units=[[heads,ffn],[heads,ffn,blocks]]", "plan.finalists=1",
        "plan.repeats=2", "plan.trials=1", "plan.target_step=0.1", "plan.batch_size=8", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads((sweep / "report" / "plan.json").read_text())
    assert (plan["metric"], plan["goal"]) == ("eval/perplexity", "minimize")
    jobs = {j["name"]: j for j in plan["jobs"]}
    screened = [j for j in plan["jobs"] if j["rung"] == "screened"]
    finalists = [j for j in plan["jobs"] if j["rung"] == "finalist"]
    assert screened
    assert {j["kd"] for j in finalists} == {"none", "logits"} and all(j["status"] == "completed" for j in finalists)
    best_screened = min(screened, key=lambda j: j["score"])
    assert all(j["name"].startswith(best_screened["name"]) for j in finalists)  # lowest perplexity goes on
    chosen = plan["chosen"]
    assert chosen["score"] == min(j["score"] for j in finalists if j["measured"]["size_mb"] <= 7.65)
    assert chosen["drop_rel"] == pytest.approx((chosen["score"] - jobs["dense"]["score"]) / jobs["dense"]["score"])
    assert "best perplexity (minimize)" in (sweep / "report" / "plan.md").read_text()
