"""int8 export vs fp32 eval latency on MiniLM (batch 32, seq 64), both timed side by side in one process.

    PYTHONPATH=src python bench/int8_latency.py [--model RUN_FOLDER] [--repeats 20] [--threads N]

Without `--model` the bundled all-MiniLM-L6-v2 (fresh 5-way head) is folded onto the Q8BERT int8 grid first, so
the export stores every Linear exactly, as after `quantizer=q8bert`; with `--model` a finished run's folder is
loaded as saved. Runs are interleaved (fp32, int8, fp32, ...) so load from other processes hits both alike.
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForSequenceClassification

from compress_sweeps.hooks import RunContext
from compress_sweeps.models import minilm
from compress_sweeps.quantizers import Q8Bert
from compress_sweeps.quantizers.export import paired_latency_ms, to_int8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a run folder (model.safetensors + HF config); default MiniLM")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:
        model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    else:
        model = minilm(num_labels=5).eval()
        quantizer = Q8Bert(quantize_activations=False)
        quantizer.attach(model, RunContext(total_steps=0, num_labels=5, device=torch.device("cpu")))
        model = quantizer.finalize(model)
    int8, counts = to_int8(model)
    vocab = model.config.vocab_size
    inputs = {
        "input_ids": torch.randint(1000, vocab, (args.batch, args.seq)),
        "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long),
        "token_type_ids": torch.zeros(args.batch, args.seq, dtype=torch.long),
    }
    with torch.inference_mode():
        fp32_logits, int8_logits = model(**inputs).logits, int8(**inputs).logits
    agreement = float((fp32_logits.argmax(-1) == int8_logits.argmax(-1)).float().mean())
    latency = paired_latency_ms({"fp32": model, "int8": int8}, inputs, repeats=args.repeats)
    print(f"model: {args.model or 'all-MiniLM-L6-v2 (folded to the q8bert int8 grid)'}; {counts}")
    print(f"batch {args.batch} x seq {args.seq}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"fp32 latency: {latency['fp32']:.1f} ms   int8 latency: {latency['int8']:.1f} ms")
    print(f"int8 / fp32 latency ratio: {latency['int8'] / latency['fp32']:.3f}")
    difference = float((fp32_logits - int8_logits).abs().max())
    print(f"max |logit difference|: {difference:.4f}; argmax agreement {agreement:.3f}")


if __name__ == "__main__":
    main()
