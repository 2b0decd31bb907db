"""Bench: training steps per second on short texts, this loop vs the Hugging Face Trainer, per-batch vs fixed padding.

Everything runs in one process, interleaved: each round runs every configuration for `--steps` optimizer steps from
the same starting weights (the bundled MiniLM, one fresh 5-way head) on the first sentences of BBC News articles
(28 tokens on average, `bench/bbc_first_sentences.py`) at max_length 128, and times the steps after `--warmup`
(end of one optimizer step to the end of the last). The configurations:

  before       this loop before per-batch padding: every example padded to max_length, AdamW's foreach kernel
  fixed        every example padded to max_length, fused AdamW (what the loop uses now)
  dynamic      each batch padded to its longest example (the default now)
  dynamic8     ... rounded up to a multiple of 8 (task.pad_to_multiple_of=8)
  grouped      dynamic + trainer.group_by_length=true
  hf           transformers.Trainer with its defaults: DataCollatorWithPadding, adamw_torch_fused
  hf_grouped   the same, on the batches of `grouped`

Both trainers get the same model, batch size 16, lr 1e-4, weight decay 0.01 (not on biases and LayerNorms), AdamW +
linear schedule with 10% warmup, gradient clipping at 1.0, loss logged every 10 steps. They also get the same batches:
the HF Trainer replays the examples this loop drew in the same round (`hf` those of `dynamic`, `hf_grouped` those of
`grouped`), so a difference in steps/s is the loop's, not the data's; the padded tokens per step are printed to show it.

    PYTHONPATH=src python bench/text_throughput.py
    PYTHONPATH=src python bench/text_throughput.py --steps 20 --rounds 5 --configs fixed,dynamic,hf
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from bbc_first_sentences import write_csvs
from torch import nn
from torch.utils.data import Sampler

from compress_sweeps.batching import PadCollator
from compress_sweeps.hooks import Compressors, RunContext
from compress_sweeps.loggers import NullLogger
from compress_sweeps.models import minilm, tokenizer_for
from compress_sweeps.tasks import text_files
from compress_sweeps.tasks.text import TokenizedSplit
from compress_sweeps.trainer import Trainer

CONFIGS = ("before", "fixed", "dynamic", "dynamic8", "grouped", "hf", "hf_grouped")
REPLAYS = {"hf": "dynamic", "hf_grouped": "grouped"}  # the HF Trainer runs the batches of this loop's config
SETTINGS = {"batch_size": 16, "lr": 1e-4, "weight_decay": 0.01, "warmup_ratio": 0.1, "max_grad_norm": 1.0}


class StepClock:
    """A compressor that only watches (the hook protocol): when each optimizer step ended, which examples it saw."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.order: list[int] = []

    def attach(self, model: nn.Module, context: RunContext) -> None:
        pass

    def loss(self, outputs, batch, loss):
        self.order += batch["idx"].tolist()
        return loss

    def before_optimizer_step(self, step: int) -> None:
        pass

    def after_optimizer_step(self, step: int) -> None:
        self.ends.append(time.perf_counter())

    def finalize(self, model: nn.Module) -> nn.Module:
        return model

    def metrics(self) -> dict[str, float]:
        return {}


class ClockCallback(transformers.TrainerCallback):
    """The same clock in the HF Trainer: the end of each optimizer step."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.ends.append(time.perf_counter())


class Replay(Sampler[int]):
    """The examples in a given order (what this loop drew), then the rest of the data."""

    def __init__(self, order: list[int], size: int) -> None:
        seen = set(order)
        self.order = order + [i for i in range(size) if i not in seen]

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class ReplayTrainer(transformers.Trainer):
    """`transformers.Trainer` unchanged, except that it draws its batches in a given order."""

    def __init__(self, *args, order: list[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.order = order

    def _get_train_sampler(self, train_dataset=None) -> Sampler[int]:
        return Replay(self.order, len(self.train_dataset))


class ForeachTrainer(Trainer):
    """This loop as it was before: AdamW's foreach implementation instead of the fused kernel."""

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        fused = super()._optimizer(model)
        groups = [{"params": group["params"], "weight_decay": group["weight_decay"]} for group in fused.param_groups]
        return torch.optim.AdamW(groups, lr=self.lr, fused=False)


def count_tokens(model: nn.Module) -> tuple[list[tuple[int, int]], object]:
    """(padded, real) tokens of every forward call, recorded by a forward pre-hook; returns the list and the handle."""
    seen: list[tuple[int, int]] = []

    def hook(module, args, kwargs) -> None:
        seen.append((kwargs["input_ids"].numel(), int(kwargs["attention_mask"].sum())))

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def ours(config: str, base: nn.Module, split: TokenizedSplit, keys, steps: int, seed: int) -> dict:
    model = copy.deepcopy(base)
    make = ForeachTrainer if config == "before" else Trainer
    trainer = make(
        max_steps=steps, eval_every=None, log_every=10, checkpoint_every=None, device="cpu", progress=False,
        group_by_length=config == "grouped", **SETTINGS,
    )  # fmt: skip
    clock = StepClock()
    context = RunContext(total_steps=steps, num_labels=5, device=torch.device("cpu"), input_keys=keys, train_set=split)
    tokens, handle = count_tokens(model)
    trainer.fit(model, split, split, Compressors([clock]), context, NullLogger(), seed=seed)
    handle.remove()
    return {"ends": clock.ends, "tokens": tokens, "order": clock.order}


def hugging_face(base: nn.Module, split: TokenizedSplit, tokenizer, order: list[int], steps: int, seed: int) -> dict:
    model = copy.deepcopy(base)
    clock = ClockCallback()
    with tempfile.TemporaryDirectory() as tmp:
        args = transformers.TrainingArguments(
            output_dir=tmp, max_steps=steps, per_device_train_batch_size=SETTINGS["batch_size"],
            learning_rate=SETTINGS["lr"], weight_decay=SETTINGS["weight_decay"],
            warmup_steps=SETTINGS["warmup_ratio"], lr_scheduler_type="linear", max_grad_norm=SETTINGS["max_grad_norm"],
            logging_steps=10, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
            use_cpu=True, seed=seed,
        )  # fmt: skip
        trainer = ReplayTrainer(
            model=model, args=args, train_dataset=split.rows, processing_class=tokenizer, callbacks=[clock], order=order
        )
        tokens, handle = count_tokens(model)
        trainer.train()
        handle.remove()
    return {"ends": clock.ends, "tokens": tokens}


def steps_per_s(ends: list[float], warmup: int) -> float:
    return (len(ends) - warmup) / (ends[-1] - ends[warmup - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=14, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps not timed")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every configuration, interleaved")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    configs = args.configs.split(",")
    if unknown := set(configs) - set(CONFIGS):
        raise SystemExit(f"unknown configs {sorted(unknown)}; choose from {CONFIGS}")
    missing = {REPLAYS[c] for c in configs if c in REPLAYS} - set(configs)
    if missing:
        raise SystemExit(f"{sorted(missing)} must run too: the HF Trainer replays its batches")
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    folder = Path(tempfile.mkdtemp(prefix="text_throughput_"))
    train_csv, dev_csv = write_csvs(folder)
    task = text_files(str(train_csv), str(dev_csv), max_length=args.max_length, cache_dir=str(folder / "cache"))
    torch.manual_seed(0)
    base = minilm(task.num_labels)
    tokenizer = tokenizer_for(base)
    dynamic, _ = task.datasets(tokenizer)
    keys = list(dynamic.collate.pad_values)

    def padded(**options) -> TokenizedSplit:
        return TokenizedSplit(dynamic.rows, PadCollator.for_tokenizer(tokenizer, keys, **options))

    fixed = padded(width=args.max_length)
    splits = {"before": fixed, "fixed": fixed, "dynamic": dynamic, "dynamic8": padded(multiple_of=8)}
    splits |= {"grouped": dynamic, "hf": dynamic, "hf_grouped": dynamic}
    print(
        f"{len(dynamic)} training sentences, {statistics.fmean(dynamic.lengths):.1f} tokens on average (max "
        f"{max(dynamic.lengths)}), max_length {args.max_length}; batch 16; {torch.get_num_threads()} torch threads; "
        f"{args.rounds} rounds x {args.steps} steps, the first {args.warmup} not timed"
    )
    rates: dict[str, list[float]] = {c: [] for c in configs}
    tokens: dict[str, list[tuple[int, int]]] = {c: [] for c in configs}
    for seed in range(args.rounds):
        orders = {}
        for config in configs:
            if config in REPLAYS:
                run = hugging_face(base, splits[config], tokenizer, orders[REPLAYS[config]], args.steps, seed)
            else:
                run = ours(config, base, splits[config], task.input_keys, args.steps, seed)
                orders[config] = run["order"]
            rates[config].append(steps_per_s(run["ends"], args.warmup))
            tokens[config] += run["tokens"][args.warmup :]
            print(f"  round {seed}: {config:<10} {rates[config][-1]:.3f} steps/s", flush=True)

    median = {c: statistics.median(rates[c]) for c in configs}
    print(f"\n{'config':<11} {'steps/s':>8} {'rounds':>24} {'padded tok/step':>16} {'real tok/step':>14}")
    for config in configs:
        per_round = " ".join(f"{r:.3f}" for r in rates[config])
        padded_tokens = statistics.fmean(p for p, _ in tokens[config])
        real_tokens = statistics.fmean(r for _, r in tokens[config])
        print(f"{config:<11} {median[config]:>8.3f} {per_round:>24} {padded_tokens:>16.0f} {real_tokens:>14.0f}")
    print("\nratios of median steps/s:")
    pairs = [
        ("dynamic", "fixed"), ("grouped", "fixed"), ("dynamic8", "dynamic"), ("fixed", "before"),
        ("dynamic", "before"), ("grouped", "before"), ("dynamic", "hf"), ("grouped", "hf_grouped"),
    ]  # fmt: skip
    for a, b in pairs:
        if a in median and b in median:
            print(f"  {a} / {b}: {median[a] / median[b]:.3f}")


if __name__ == "__main__":
    main()
