"""Bench: eval accuracy of this training loop vs the Hugging Face Trainer on the same job, over several seeds.

Both fine-tune the bundled MiniLM (a fresh head, initialised from the same seed) with the settings of
`conf/trainer/default.yaml` (steps, batch, lr, weight decay, warmup, schedule, clipping; AdamW, fused in both), each
batch padded to its longest example, on two tasks: `bbc` (task=bbc_news, 128 tokens per article) and `short` (the first
sentence of each article, `bench/bbc_first_sentences.py`, 28 tokens on average). This loop runs as users run it,
`python -m compress_sweeps logger=none seed=S ...`; the HF Trainer runs in this process with its defaults
(DataCollatorWithPadding, adamw_torch_fused, its own data order). Each result is appended to `<out>/results.jsonl` as
soon as it is known, and a re-run skips what is there, so an interrupted study continues where it stopped.

Every run of this loop is also evaluated a second time with every validation example padded to max_length, as before
per-batch padding: the predictions must be the same (attention masks make them equal up to float noise).

    PYTHONPATH=src nohup python bench/hf_parity.py --out outputs/hf_parity > outputs/hf_parity.log 2>&1 &
    PYTHONPATH=src python bench/hf_parity.py --out outputs/hf_parity --summary   # the table of what is there
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import transformers
from bbc_first_sentences import write_csvs
from hydra.utils import instantiate

from compress_sweeps import batching
from compress_sweeps.batching import PadCollator
from compress_sweeps.config import compose_train
from compress_sweeps.models import from_run, minilm, tokenizer_for
from compress_sweeps.tasks.text import TokenizedSplit

TASKS = ("bbc", "short")
TRAINERS = ("ours", "hf")


def job_overrides(task: str, seed: int, folder: Path, extra: list[str]) -> list[str]:
    """The overrides of one job, for `python -m compress_sweeps` and for composing the same config here."""
    common = [f"seed={seed}", f"paths.cache_dir={folder / 'cache'}", *extra]
    if task == "bbc":
        return common
    train, dev = write_csvs(folder / "bbc_first_sentences")
    return ["task=text_files", f"task.train_file={train}", f"task.validation_file={dev}", *common]


@torch.no_grad()
def predictions(model: torch.nn.Module, split, keys, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every example of `split`, in order."""
    model.eval()
    batches = list(batching.loader(split, batch_size))
    logits = [model(**{k: b[k] for k in keys if k in b}).logits for b in batches]
    return torch.cat(logits), torch.cat([b["labels"] for b in batches])


def padding_check(run_dir: Path, overrides: list[str]) -> dict:
    """The finished model of a run evaluated with per-batch and with fixed (max_length) padding."""
    cfg = compose_train(overrides)
    task = instantiate(cfg.task)
    model = from_run(str(run_dir), task.num_labels)
    tokenizer = tokenizer_for(model)
    _, dynamic = task.datasets(tokenizer)
    keys = list(dynamic.collate.pad_values)
    fixed = TokenizedSplit(dynamic.rows, PadCollator.for_tokenizer(tokenizer, keys, width=task.max_length))
    logits, labels = predictions(model, dynamic, task.input_keys, cfg.trainer.eval_batch_size)
    logits = {"dyn": logits, "fix": predictions(model, fixed, task.input_keys, cfg.trainer.eval_batch_size)[0]}
    return {
        "fixed_padding_accuracy": float((logits["fix"].argmax(-1) == labels).float().mean()),
        "same_predictions": int((logits["dyn"].argmax(-1) == logits["fix"].argmax(-1)).sum()),
        "examples": len(labels),
        "max_logit_diff": float((logits["dyn"] - logits["fix"]).abs().max()),
    }


def run_ours(task: str, seed: int, folder: Path, extra: list[str]) -> dict:
    overrides = job_overrides(task, seed, folder, extra)
    run_dir = folder / "runs" / f"{task}-ours-{seed}"
    command = [sys.executable, "-m", "compress_sweeps", *overrides, "logger=none", "trainer.progress=false"]
    done = subprocess.run([*command, f"hydra.run.dir={run_dir}"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    results = json.loads((run_dir / "results.json").read_text())
    row = {"eval_accuracy": results["metrics"]["eval/accuracy"], "eval_loss": results["metrics"]["eval/loss"]}
    row |= {"train_s": results["timing"]["train_s"]} | padding_check(run_dir, overrides)
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    (run_dir / "model.safetensors").unlink()  # 90 MB a run; results.json stays
    return row


def run_hf(task: str, seed: int, folder: Path, extra: list[str]) -> dict:
    cfg = compose_train(job_overrides(task, seed, folder, extra))
    settings = cfg.trainer
    data = instantiate(cfg.task)
    transformers.set_seed(seed)  # as `seed_everything` before the model is built: the same fresh head
    model = minilm(data.num_labels)
    tokenizer = tokenizer_for(model)
    train_set, eval_set = data.datasets(tokenizer)
    args = transformers.TrainingArguments(
        output_dir=str(folder / "runs" / f"{task}-hf-{seed}"),
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size,
        learning_rate=settings.lr,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_ratio,
        lr_scheduler_type=settings.lr_schedule,
        max_grad_norm=settings.max_grad_norm,
        logging_steps=settings.log_every,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=seed,
    )

    def accuracy(prediction: transformers.EvalPrediction) -> dict[str, float]:
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=train_set.rows,
        eval_dataset=eval_set.rows,
        processing_class=tokenizer,
        compute_metrics=accuracy,
    )
    trained = trainer.train()
    scores = trainer.evaluate()
    row = {"eval_accuracy": scores["eval_accuracy"], "eval_loss": scores["eval_loss"]}
    return row | {"train_s": float(trained.metrics["train_runtime"])}


def summary(rows: list[dict]) -> None:
    for task in TASKS:
        done = {t: [r for r in rows if r["task"] == task and r["trainer"] == t] for t in TRAINERS}
        if not any(done.values()):
            continue
        print(f"\n{task}:")
        for trainer, runs in done.items():
            accuracies = [r["eval_accuracy"] for r in runs]
            if not accuracies:
                continue
            spread = statistics.stdev(accuracies) if len(accuracies) > 1 else float("nan")
            seeds = ", ".join(f"{r['seed']}: {r['eval_accuracy']:.4f}" for r in sorted(runs, key=lambda r: r["seed"]))
            print(f"  {trainer:<5} mean {statistics.fmean(accuracies):.4f}  sd {spread:.4f}  n {len(runs)}  ({seeds})")
        if all(len(runs) > 1 for runs in done.values()):
            means = {t: statistics.fmean(r["eval_accuracy"] for r in runs) for t, runs in done.items()}
            variances = {t: statistics.variance([r["eval_accuracy"] for r in runs]) for t, runs in done.items()}
            se = math.sqrt(sum(variances[t] / len(runs) for t, runs in done.items()))
            diff = means["ours"] - means["hf"]
            verdict = "within" if abs(diff) <= 2 * se else "OUTSIDE"
            print(f"  ours - hf = {diff:+.4f} (standard error {se:.4f}): {verdict} 2 standard errors")
        for r in done["ours"]:
            print(
                f"  ours seed {r['seed']}: fixed padding gives {r['same_predictions']}/{r['examples']} identical "
                f"predictions, accuracy {r['fixed_padding_accuracy']:.4f} (per batch {r['eval_accuracy']:.4f}), "
                f"max |logit difference| {r['max_logit_diff']:.2e}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/hf_parity", help="folder for results.jsonl, runs and caches")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    parser.add_argument("--summary", action="store_true", help="only print the table of the results so far")
    parser.add_argument("overrides", nargs="*", help="extra overrides for both, e.g. trainer.max_steps=5")
    args = parser.parse_args()
    folder = Path(args.out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "results.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    if not args.summary:
        transformers.logging.set_verbosity_error()
        for seed in map(int, args.seeds.split(",")):
            for task in args.tasks.split(","):
                for trainer in args.trainers.split(","):
                    if any((r["task"], r["trainer"], r["seed"]) == (task, trainer, seed) for r in rows):
                        continue
                    row = {"task": task, "trainer": trainer, "seed": seed}
                    row |= (run_ours if trainer == "ours" else run_hf)(task, seed, folder, args.overrides)
                    rows.append(row)
                    with log.open("a") as handle:
                        handle.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    summary(rows)


if __name__ == "__main__":
    main()
