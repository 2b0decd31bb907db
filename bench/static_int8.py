"""Post-training int8 of a finished run: fp32 vs ONNX Runtime dynamic vs static (calibrated) int8, on the eval set.

    PYTHONPATH=src python bench/static_int8.py --model outputs/runs/<run> [--examples 256] [--seed 0]

The run folder's model is rebuilt (`model=from_run`), the BBC News splits are encoded with its tokenizer (the
default task), and the static export is calibrated on `--examples` training examples drawn with `--seed` (the same
sampling as the one-shot pruners). Prints accuracy of the three models on the validation split and their latency on
one eval batch (interleaved in one process; see export/int8.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from compress_sweeps.export.int8 import paired_latency_ms
from compress_sweeps.export.onnx import to_int8_onnx
from compress_sweeps.export.onnx_static import to_int8_onnx_static
from compress_sweeps.hooks import logits_of
from compress_sweeps.models import from_run, tokenizer_for
from compress_sweeps.tasks import bbc_news
from compress_sweeps.tasks.sample import calibration_batches


@torch.inference_mode()
def accuracy(model: torch.nn.Module, eval_set, keys: list[str], batch_size: int = 64) -> float:
    right = total = 0
    for batch in DataLoader(eval_set, batch_size=batch_size):
        logits = logits_of(model(**{k: batch[k] for k in keys if k in batch}))
        right += int((logits.argmax(-1) == batch["labels"]).sum())
        total += len(batch["labels"])
    return right / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a finished run folder (model.safetensors + model_config.yaml)")
    parser.add_argument("--examples", type=int, default=256, help="calibration examples")
    parser.add_argument("--seed", type=int, default=0, help="draws the calibration examples")
    parser.add_argument("--calibrate-method", default="minmax", help="minmax | entropy | percentile")
    args = parser.parse_args()

    task = bbc_news()
    model = from_run(args.model, task.num_labels).eval()
    train_set, eval_set = task.datasets(tokenizer_for(model))
    keys = [k for k in task.input_keys if k in eval_set[0]]
    batches = calibration_batches(train_set, keys, args.examples, 16, args.seed)
    example = next(iter(DataLoader(eval_set, batch_size=32)))
    inputs = {k: example[k] for k in keys}
    row: dict = {"model": args.model, "calibration_examples": args.examples, "seed": args.seed}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        dynamic, _ = to_int8_onnx(model, inputs, Path(tmp) / "dynamic.onnx")
        row["dynamic_export_s"] = time.perf_counter() - started
        started = time.perf_counter()
        static, facts = to_int8_onnx_static(
            model, batches, Path(tmp) / "static.onnx", calibrate_method=args.calibrate_method
        )
        row["static_export_s"] = time.perf_counter() - started
        row |= {f"static_{k}": v for k, v in facts.items()}
        models = {"fp32": model, "int8_dynamic": dynamic, "int8_static": static}
        for name, candidate in models.items():
            row[f"accuracy_{name}"] = accuracy(candidate, eval_set, keys)
        row |= {f"latency_ms_{k}": v for k, v in paired_latency_ms(models, inputs, repeats=10).items()}
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
