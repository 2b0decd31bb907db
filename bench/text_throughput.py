"""Bench: training steps per second on short texts, this loop vs the Hugging Face Trainer, per-batch vs fixed padding.

Everything runs in one process, interleaved step by step: every configuration trains in its own thread, and the
threads take turns, one optimizer step each (only the thread whose turn it is runs; a new random order every cycle),
so load from other processes falls on all configurations alike. A step's time runs from the moment its thread gets
the turn to the end of its optimizer step: one whole cycle of the loop (logging, data, forward, backward, clipping,
AdamW, schedule). Each round
trains every configuration for `--steps` steps from the same weights (the bundled MiniLM, one fresh 5-way head) on
the first sentences of BBC News articles (28 tokens on average, `bench/bbc_first_sentences.py`) at max_length 128;
the first `--warmup` steps (setup, first calls) are not counted. Besides steps per second (wall time), the CPU time
of the process per step is printed: on a loaded machine it varies less. The configurations:

  before       this loop before per-batch padding: every example padded to max_length, AdamW's foreach kernel
  fixed        every example padded to max_length, fused AdamW (as the loop runs now)
  dynamic      each batch padded to its longest example (the default now)
  dynamic8     ... rounded up to a multiple of 8
  grouped      dynamic + trainer.group_by_length=true
  hf           transformers.Trainer with its defaults (DataCollatorWithPadding, adamw_torch_fused), batches of `dynamic`
  hf_grouped   the same, on the batches of `grouped`

Both trainers get the same model, batch size 16, lr 1e-4, weight decay 0.01 (not on biases and LayerNorms), AdamW +
linear schedule with 10% warmup, gradient clipping at 1.0, the loss logged every 10 steps, and the same batches: the
HF Trainer replays the examples this loop draws for the same seed, so a difference in steps/s is the loop's, not the
data's (the padded tokens per step are printed to show it).

    PYTHONPATH=src python bench/text_throughput.py
    PYTHONPATH=src python bench/text_throughput.py --steps 20 --rounds 5 --configs fixed,dynamic,hf
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
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


class Turns:
    """Threads take turns, one optimizer step each, in cycles: every member steps once per cycle, in a new random
    order each cycle (no configuration always follows the same one). `seconds[name]` is the wall time of each of its
    steps, `cpu_seconds[name]` the CPU time of this process meanwhile (all its threads; the others are waiting)."""

    def __init__(self, names: list[str], seed: int) -> None:
        self.members, self.random = list(names), random.Random(seed)
        self.queue = self.random.sample(self.members, len(self.members))
        self.seconds: dict[str, list[float]] = {name: [] for name in names}
        self.cpu_seconds: dict[str, list[float]] = {name: [] for name in names}
        self.started: dict[str, tuple[float, float]] = {}
        self.condition = threading.Condition()

    def wait(self, name: str) -> None:
        with self.condition:
            self.condition.wait_for(lambda: self.queue[0] == name)
        self.started[name] = (time.perf_counter(), time.process_time())

    def step_done(self, name: str) -> None:
        wall, cpu = self.started[name]
        self.seconds[name].append(time.perf_counter() - wall)
        self.cpu_seconds[name].append(time.process_time() - cpu)
        self._next(name, leaving=False)
        self.wait(name)

    def leave(self, name: str) -> None:
        self._next(name, leaving=True)

    def _next(self, name: str, leaving: bool) -> None:
        with self.condition:
            if leaving:
                self.members.remove(name)
            if name in self.queue:
                self.queue.remove(name)
            if not self.queue and self.members:
                self.queue = self.random.sample(self.members, len(self.members))
            self.condition.notify_all()


class StepClock:
    """A compressor (the hook protocol) that changes nothing and says when each optimizer step ended."""

    def __init__(self, done: Callable[[], None]) -> None:
        self.done = done

    def attach(self, model: nn.Module, context: RunContext) -> None:
        pass

    def loss(self, outputs, batch, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def before_optimizer_step(self, step: int) -> None:
        pass

    def after_optimizer_step(self, step: int) -> None:
        self.done()

    def finalize(self, model: nn.Module) -> nn.Module:
        return model

    def metrics(self) -> dict[str, float]:
        return {}


class ClockCallback(transformers.TrainerCallback):
    """The same in the HF Trainer: the end of each optimizer step."""

    def __init__(self, done: Callable[[], None]) -> None:
        self.done = done

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.done()


class Replay(Sampler[int]):
    """The examples in a given order, then the rest of the data."""

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


def ours(config: str, steps: int) -> Trainer:
    make = ForeachTrainer if config == "before" else Trainer
    return make(
        max_steps=steps, eval_every=None, log_every=10, checkpoint_every=None, device="cpu", progress=False,
        group_by_length=config == "grouped", **SETTINGS,
    )  # fmt: skip


def count_tokens(model: nn.Module, seen: list[tuple[int, int]]) -> None:
    """Record (padded, real) tokens of every forward call of `model`."""

    def hook(module, args, kwargs) -> None:
        seen.append((kwargs["input_ids"].numel(), int(kwargs["attention_mask"].sum())))

    model.register_forward_pre_hook(hook, with_kwargs=True)


def train_ours(config, turns, base, split, keys, steps, seed, tokens) -> None:
    model = copy.deepcopy(base)
    count_tokens(model, tokens)
    context = RunContext(total_steps=steps, num_labels=5, device=torch.device("cpu"), input_keys=keys, train_set=split)
    clock = StepClock(lambda: turns.step_done(config))
    ours(config, steps).fit(model, split, split, Compressors([clock]), context, NullLogger(), seed=seed)


def train_hf(config, turns, base, split, tokenizer, order, steps, seed, tokens) -> None:
    model = copy.deepcopy(base)
    count_tokens(model, tokens)
    with tempfile.TemporaryDirectory() as tmp:
        args = transformers.TrainingArguments(
            output_dir=tmp, max_steps=steps, per_device_train_batch_size=SETTINGS["batch_size"],
            learning_rate=SETTINGS["lr"], weight_decay=SETTINGS["weight_decay"],
            warmup_steps=SETTINGS["warmup_ratio"], lr_scheduler_type="linear", max_grad_norm=SETTINGS["max_grad_norm"],
            logging_steps=10, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
            use_cpu=True, seed=seed,
        )  # fmt: skip
        clock = ClockCallback(lambda: turns.step_done(config))
        trainer = ReplayTrainer(
            model=model, args=args, train_dataset=split.rows, processing_class=tokenizer, callbacks=[clock], order=order
        )
        trainer.train()


def take_turns(turns: Turns, name: str, work: tuple) -> None:
    """A thread's whole run, in its turns: `work[0](*work[1:])`."""
    turns.wait(name)
    try:
        work[0](*work[1:])
    finally:
        turns.leave(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=14, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps not counted")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every configuration (seeds 0, 1, ...)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    configs = args.configs.split(",")
    if unknown := set(configs) - set(CONFIGS):
        raise SystemExit(f"unknown configs {sorted(unknown)}; choose from {CONFIGS}")
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
        f"{args.rounds} rounds x {args.steps} steps, the first {args.warmup} not counted",
        flush=True,
    )
    rates: dict[str, list[float]] = {c: [] for c in configs}
    cpu: dict[str, list[float]] = {c: [] for c in configs}
    tokens: dict[str, list[tuple[int, int]]] = {c: [] for c in configs}
    for seed in range(args.rounds):
        turns, seen = Turns(configs, seed), {c: [] for c in configs}
        threads = []
        for config in configs:
            if config in REPLAYS:  # the examples of this loop's first `steps` batches for this seed, in order
                batches = ours(REPLAYS[config], args.steps)._batches(dynamic, torch.Generator().manual_seed(seed))
                order = [i for _ in range(args.steps) for i in next(batches)["idx"].tolist()]
                work = (train_hf, config, turns, base, splits[config], tokenizer, order)
            else:
                work = (train_ours, config, turns, base, splits[config], task.input_keys)
            work += (args.steps, seed, seen[config])
            threads.append(threading.Thread(target=take_turns, args=(turns, config, work), name=config))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for config in configs:
            counted = turns.seconds[config][args.warmup :]
            rates[config].append(len(counted) / sum(counted))
            cpu[config] += turns.cpu_seconds[config][args.warmup :]
            tokens[config] += seen[config][args.warmup :]
        print(f"round {seed}: " + ", ".join(f"{c} {rates[c][-1]:.3f}" for c in configs) + " steps/s", flush=True)

    median = {c: statistics.median(rates[c]) for c in configs}
    header = f"{'config':<11} {'steps/s':>8} {'per round':>22} {'CPU s/step':>11} {'padded tokens/step':>19}"
    print(f"\n{header} {'real tokens/step':>17}")
    for config in configs:
        per_round = " ".join(f"{r:.3f}" for r in rates[config])
        padded_tokens = statistics.fmean(p for p, _ in tokens[config])
        real_tokens = statistics.fmean(r for _, r in tokens[config])
        cpu_step = statistics.fmean(cpu[config])
        print(
            f"{config:<11} {median[config]:>8.3f} {per_round:>22} {cpu_step:>11.3f} {padded_tokens:>19.0f} "
            f"{real_tokens:>17.0f}"
        )
    print("\nratios of the median steps/s:")
    pairs = [
        ("dynamic", "fixed"), ("grouped", "fixed"), ("dynamic8", "dynamic"), ("fixed", "before"),
        ("dynamic", "before"), ("grouped", "before"), ("dynamic", "hf"), ("grouped", "hf_grouped"),
    ]  # fmt: skip
    for a, b in pairs:
        if a in median and b in median:
            by_cpu = statistics.fmean(cpu[b]) / statistics.fmean(cpu[a])
            print(f"  {a} / {b}: {median[a] / median[b]:.3f}   (by CPU time per step: {by_cpu:.3f})")


if __name__ == "__main__":
    main()
