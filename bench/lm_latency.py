"""Latency of a slimmed causal LM against the dense one, as ratios timed interleaved in one process (issue 29).

The dense model is SmolLM2-135M (`model=smollm2`, or any `--model` config of conf/model/ with `--set` overrides);
the slim one is a run folder of `pruner=slim` (`--run`, loaded with model=from_run) or, without one, the dense model
with `--target` of its blocks' FLOPs cut out in one shot here (magnitude scores of key/value heads with their query
groups and FFN neurons: speed only, its perplexity is not the point). Two workloads, each model timed alternately
(models/timing.py, what every run's `compression.latency` uses): batch 1, generation-like (`generate` greedy:
a 128-token prompt, then `--new-tokens` tokens one at a time with the key/value cache), and batch 8 x 128 tokens
(prefill: one forward pass). Both models score the same validation blocks too (perplexity, for the record). The FLOPs
removed are measured on the slim model (run/shapes.py).

    PYTHONPATH=src python bench/lm_latency.py [--run <slim run folder>] [--target 0.5] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy

import torch
from hydra.utils import instantiate
from torch import nn

from compress_sweeps.config import compose_train
from compress_sweeps.hooks import RunContext
from compress_sweeps.models import from_run, tokenizer_for
from compress_sweeps.models.timing import interleaved_ms, machine
from compress_sweeps.objectives import NEXT_TOKEN
from compress_sweeps.pruners.criteria import Magnitude
from compress_sweeps.pruners.slim import SlimPruner
from compress_sweeps.run.shapes import costs


def slimmed(dense: nn.Module, rows: list[dict], target: float) -> nn.Module:
    """A copy of `dense` with `target` of its blocks' FLOPs cut out at once (magnitude scores)."""
    model = copy.deepcopy(dense)
    context = RunContext(1, None, torch.device("cpu"), input_keys=["input_ids", "attention_mask"], train_set=rows)
    pruner = SlimPruner(Magnitude, target, ["heads", "ffn"], "flops", start_step=0, end_step=0)
    pruner.attach(model, context)
    return pruner.finalize(model)


def generator(model: nn.Module, new_tokens: int):
    def generate(**inputs):
        return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              use_cache=True, pad_token_id=model.config.eos_token_id)  # fmt: skip

    return generate


@torch.no_grad()
def perplexity(model: nn.Module, blocks: dict) -> float:
    logits = model(input_ids=blocks["input_ids"], attention_mask=blocks["attention_mask"]).logits
    return NEXT_TOKEN.scores([(logits, blocks["labels"])])["eval/perplexity"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--set", nargs="*", default=[], help="overrides of the model config (model.key=value)")
    parser.add_argument("--run", default=None, help="a pruner=slim run folder of the same model")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = compose_train(["task=lm_text", f"model={args.model}", *args.set])
    dense = instantiate(cfg.model).eval()
    dense.config.use_cache = True
    task = instantiate(cfg.task)
    _, eval_set = task.datasets(tokenizer_for(dense))
    rows = [eval_set[i] for i in range(8)]
    blocks = {k: torch.stack([r[k] for r in rows]) for k in ("input_ids", "attention_mask", "labels")}
    slim = (from_run(args.run, None) if args.run else slimmed(dense, rows, args.target)).eval()
    slim.config.use_cache = True
    one = {k: blocks[k][:1] for k in ("input_ids", "attention_mask")}
    prefill = {k: blocks[k] for k in ("input_ids", "attention_mask")}
    flops = costs(slim, dense, [], one)["flops"]
    print(f"machine: {machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"slim model: {args.run or f'one-shot magnitude cut of {args.target:.0%} of the blocks FLOPs'}")
    print(f"FLOPs (1 x 128, measured): dense {flops['model_before']:.3g}, slim {flops['model_after']:.3g}, "
          f"ratio {flops['model_after'] / flops['model_before']:.3f}")  # fmt: skip
    sizes = [sum(p.numel() for p in m.parameters()) for m in (dense, slim)]
    print(f"params: dense {sizes[0]:,}, slim {sizes[1]:,}")
    scores = [perplexity(m, blocks) for m in (dense, slim)]
    print(f"perplexity on 8 validation blocks: dense {scores[0]:.2f}, slim {scores[1]:.2f}")
    decode = interleaved_ms({"dense": generator(dense, args.new_tokens), "slim": generator(slim, args.new_tokens)},
                            one, repeats=args.repeats, warmup=1)  # fmt: skip
    print(f"batch 1, 128-token prompt + {args.new_tokens} generated tokens: dense {decode['dense']:.0f} ms, "
          f"slim {decode['slim']:.0f} ms, ratio {decode['slim'] / decode['dense']:.3f}")  # fmt: skip
    forward = interleaved_ms({"dense": dense, "slim": slim}, prefill, repeats=args.repeats, warmup=1)
    print(f"batch 8 x 128 prefill (one forward): dense {forward['dense']:.0f} ms, slim {forward['slim']:.0f} ms, "
          f"ratio {forward['slim'] / forward['dense']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
