"""int8 export vs fp32 eval latency on MiniLM (batch 32, seq 64), all timed side by side in one process.

    PYTHONPATH=src python bench/int8_latency.py [--model RUN_FOLDER] [--repeats 20] [--threads N]

Without `--model` the bundled all-MiniLM-L6-v2 (fresh 5-way head) is folded onto the Q8BERT int8 grid first, so
the export stores every Linear exactly, as after `quantizer=q8bert`; with `--model` a finished run's folder is
loaded as saved. Four models run interleaved (each repeat times every model once) so load from other processes
hits them alike: the PyTorch fp32 model (what a run trains and saves), both int8 backends
(`export=onnxruntime` and `export=torch`), and, for reference, the same ONNX graph in fp32
under ONNX Runtime, which separates what the runtime gains from what int8 gains.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from compress_sweeps.export.int8 import paired_latency_ms, to_int8
from compress_sweeps.export.onnx import OnnxModel, export_onnx, to_int8_onnx
from compress_sweeps.hooks import RunContext, logits_of
from compress_sweeps.models import minilm
from compress_sweeps.quantizers import Q8Bert


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
    vocab = model.config.vocab_size
    inputs = {
        "input_ids": torch.randint(1000, vocab, (args.batch, args.seq)),
        "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long),
        "token_type_ids": torch.zeros(args.batch, args.seq, dtype=torch.long),
    }
    with tempfile.TemporaryDirectory() as tmp:
        ort_int8, counts = to_int8_onnx(model, inputs, Path(tmp) / "model.int8.onnx")
        ort_fp32 = OnnxModel(export_onnx(model, inputs, Path(tmp) / "model.onnx"))
        torch_int8, torch_counts = to_int8(model)
        models = {
            "fp32": model,
            "int8 onnxruntime": ort_int8,
            "int8 torch.ao": torch_int8,
            "fp32 onnxruntime": ort_fp32,
        }
        with torch.inference_mode():
            logits = {name: logits_of(m(**inputs)) for name, m in models.items()}
        latency = paired_latency_ms(models, inputs, repeats=args.repeats)
    print(f"model: {args.model or 'all-MiniLM-L6-v2 (folded to the q8bert int8 grid)'}")
    print(f"int8 layers: onnxruntime {counts}, torch.ao {torch_counts}")
    print(f"batch {args.batch} x seq {args.seq}, {torch.get_num_threads()} threads, median of {args.repeats}")
    for name, ms in latency.items():
        agreement = float((logits[name].argmax(-1) == logits["fp32"].argmax(-1)).float().mean())
        difference = float((logits[name] - logits["fp32"]).abs().max())
        print(
            f"{name:>17}: {ms:7.1f} ms  ratio vs fp32 {ms / latency['fp32']:.3f}  "
            f"max |logit diff| {difference:.4f}  argmax agreement {agreement:.3f}"
        )
    ratio = latency["int8 onnxruntime"] / latency["fp32"]
    print(f"int8 / fp32 latency ratio (default export, onnxruntime): {ratio:.3f}")
    alone = latency["int8 onnxruntime"] / latency["fp32 onnxruntime"]
    print(f"onnxruntime int8 / onnxruntime fp32 (what int8 alone gains): {alone:.3f}")


if __name__ == "__main__":
    main()
