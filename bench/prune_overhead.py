"""Train-step time with the iterative snip_momentum pruner divided by the plain step time.

Two copies of the MiniLM student (2 layers, from the bundled all-MiniLM-L6-v2) train side by side in one process,
one plain and one with the composed `pruner=snip_momentum pruner.target_sparsity=0.8` (4x1, iterative over the
bench's steps; any other pruner config with `--override`, e.g. `--override pruner=slim`), their steps interleaved
so that both see the same machine load. Each step is what the trainer does: forward, cross entropy, backward,
gradient clipping, hooks, AdamW, zero_grad. Batch 32, sequence length 64, random token ids.

    PYTHONPATH=src python bench/prune_overhead.py [--steps 60] [--device cpu] [--threads N] [--override KEY=VALUE]

Prints the ratio of the summed step times (mask updates included), the median ratio of the steps without a mask
update, the extra time of a mask update, and the ratio these two measured costs give for the default 100-step run
(the bench's own schedule packs 13 mask updates into `--steps` steps).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from compress_sweeps.config import compose_train
from compress_sweeps.hooks import Compressors, Passthrough, RunContext
from compress_sweeps.models import student_from_teacher
from compress_sweeps.pruners import Pruner

DEFAULT = ["pruner=snip_momentum", "pruner.target_sparsity=0.8"]


def composed_pruner(overrides: list[str]):
    """The pruner as a run composes it (conf/pruner/<option>.yaml with its criterion): `overrides`, or DEFAULT."""
    return instantiate(compose_train(overrides or DEFAULT).pruner)


def one_step(model, optimizer, compressors, batch, step, device) -> tuple[float, float]:
    """One optimizer step as the trainer runs it; wall seconds of the step and of its `after_optimizer_step` hook
    (where masks are updated), synchronised on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = compressors.loss(logits, batch, F.cross_entropy(logits, batch["labels"]))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    compressors.before_optimizer_step(step)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    hook = time.perf_counter()
    compressors.after_optimizer_step(step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    return end - start, end - hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per model (after warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help=f"config overrides for the pruner (default: {' '.join(DEFAULT)})",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    models = [student_from_teacher(num_labels=5).to(device).train() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    pruner = composed_pruner(args.override)
    runs = [Compressors([Passthrough()]), Compressors([pruner])]
    rows = [
        {
            "input_ids": torch.randint(1000, 30000, (args.seq_len,)),
            "attention_mask": torch.ones(args.seq_len, dtype=torch.long),
        }
    ]
    context = RunContext(args.steps, 5, device, input_keys=("input_ids", "attention_mask"), train_set=rows)
    for model, compressors in zip(models, runs, strict=True):
        compressors.attach(model, context)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=5e-5) for m in models]
    vocab = models[0].config.vocab_size
    times: list[list[float]] = [[], []]
    hooks: list[float] = []  # the pruned model's after_optimizer_step
    for step in range(1 - args.warmup, args.steps + 1):
        batch = {
            "input_ids": torch.randint(1000, vocab, (args.batch_size, args.seq_len), device=device),
            "attention_mask": torch.ones(args.batch_size, args.seq_len, dtype=torch.long, device=device),
            "labels": torch.randint(0, 5, (args.batch_size,), device=device),
        }
        order = (0, 1) if step % 2 else (1, 0)  # alternate who goes first: neither always gets a warm cache
        for i in order:
            # warmup steps are numbered <= 0: the pruner's schedule (steps 1..steps) never sees them
            elapsed, hook = one_step(models[i], optimizers[i], runs[i], batch, max(step, 0), device)
            if step >= 1:
                times[i].append(elapsed)
                if i == 1:
                    hooks.append(hook)
    plain, pruned = times
    schedule = pruner.groups[0].schedule if isinstance(pruner, Pruner) else pruner.schedule
    updates = [t for s, t in zip(range(1, args.steps + 1), pruned, strict=True) if schedule.prunes_at(s)]
    per_step = [b / a for a, b in zip(plain, pruned, strict=True)]
    steady = [r for s, r in zip(range(1, args.steps + 1), per_step, strict=True) if not schedule.prunes_at(s)]
    update_cost = statistics.mean(
        b - a for s, a, b in zip(range(1, args.steps + 1), plain, pruned, strict=True) if schedule.prunes_at(s)
    )
    print(
        f"device={device} threads={torch.get_num_threads()} steps={args.steps} batch={args.batch_size} "
        f"seq={args.seq_len} overrides: {' '.join(args.override or DEFAULT)}, load={os.getloadavg()[0]:.1f}"
    )
    print(f"plain step: mean {1e3 * statistics.mean(plain):.1f} ms, median {1e3 * statistics.median(plain):.1f} ms")
    print(f"pruned step: mean {1e3 * statistics.mean(pruned):.1f} ms, median {1e3 * statistics.median(pruned):.1f} ms")
    print(f"mask-update steps: {len(updates)}, mean {1e3 * statistics.mean(updates):.1f} ms")
    # the update itself: the hook at an update step minus the hook's median elsewhere (re-applying the masks)
    steps = range(1, args.steps + 1)
    update_hooks = [h for s, h in zip(steps, hooks, strict=True) if schedule.prunes_at(s)]
    rest = statistics.median(h for s, h in zip(steps, hooks, strict=True) if not schedule.prunes_at(s))
    per_update = [1e3 * (h - rest) for h in update_hooks]
    print(
        f"mask update alone: median {statistics.median(per_update):.1f} ms, mean {statistics.mean(per_update):.1f} ms "
        f"(after_optimizer_step at the update steps minus its median elsewhere, {1e3 * rest:.1f} ms)"
    )
    print("pruner metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in pruner.metrics().items()))
    print(f"overhead, summed step times (mask updates included): {sum(pruned) / sum(plain):.3f}x")
    print(f"overhead, median ratio of the steps without a mask update: {statistics.median(steady):.3f}x")
    # the bench updates masks far more often than a run does (13 updates in `steps` steps); scale to the default
    # 100-step run (13 updates) from the two measured costs above
    plain_ms = statistics.median(plain)
    projected = (100 * plain_ms * statistics.median(steady) + 13 * update_cost) / (100 * plain_ms)
    print(f"extra time of one mask update: {1e3 * update_cost:.1f} ms; projected for a 100-step run: {projected:.3f}x")


if __name__ == "__main__":
    main()
