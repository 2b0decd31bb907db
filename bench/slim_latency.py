"""Latency of slimmed models (units physically removed by `pruner=slim`) against the dense ones, side by side.

MiniLM (the bundled all-MiniLM-L6-v2, fresh 5-way head) with `--target` of its encoder's FLOPs removed as heads and
FFN neurons (magnitude scores, oneshot; FLOPs counted by FlopCounterMode at the bench's sequence length), batch 32 x
64 tokens: fp32 PyTorch and int8 ONNX Runtime (`quantizers/onnx_export.to_int8_onnx`), dense and slim. Then the
project's ConvNet (`conf/model/cnn.yaml`, 28x28 inputs) with the same fraction of its conv FLOPs removed as
channels, fp32 PyTorch. All models of a family run interleaved in one process (each repeat times every model
once, in rotating order), so load from other processes hits them alike; ratios are against the dense fp32 model,
beside the ideal 1 - removed FLOPs.

    PYTHONPATH=src python bench/slim_latency.py [--target 0.5] [--repeats 20] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from compress_sweeps.hooks import RunContext
from compress_sweeps.models import ConvNet, minilm
from compress_sweeps.pruners.slim import SlimPruner
from compress_sweeps.pruners.slim.costs import module_flops
from compress_sweeps.quantizers.onnx_export import to_int8_onnx


def slimmed(model: nn.Module, inputs: dict, units: list[str], target: float, round_to: int) -> tuple[nn.Module, dict]:
    """`model` with `target` of its prunable FLOPs removed (oneshot, magnitude) and its structure summary."""
    rows = [{k: v[0] for k, v in inputs.items()}]
    cpu = torch.device("cpu")
    context = RunContext(total_steps=1, num_labels=5, device=cpu, input_keys=list(inputs), train_set=rows)
    pruner = SlimPruner(target=target, units=units, target_metric="flops", start_step=0, end_step=0, round_to=round_to)
    pruner.attach(model, context)
    return pruner.finalize(model), pruner.structure()


@torch.inference_mode()
def interleaved_ms(models: dict[str, nn.Module], inputs: dict, repeats: int) -> dict[str, float]:
    """Median forward time per model; every repeat runs each model once, the order rotating."""
    names = list(models)
    for model in models.values():
        model(**inputs)  # warm-up: weight packing, allocator, ONNX Runtime's first run
    timings: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            models[name](**inputs)
            timings[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in timings.items()}


def report(title: str, latency: dict[str, float], removed: float) -> None:
    print(f"{title}: removed {removed:.3f} of the prunable FLOPs (ideal ratio {1 - removed:.3f})")
    for name, ms in latency.items():
        print(f"  {name:>22}: {ms:8.1f} ms   ratio vs dense fp32 {ms / latency['dense fp32 torch']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=0.5, help="fraction of the prunable FLOPs to remove")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--round-to", type=int, default=8, help="kept FFN widths / channels: multiples of this")
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads")
    parser.add_argument("--skip-cnn", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dense = minilm(num_labels=5).eval()
    vocab = dense.config.vocab_size
    inputs = {
        "input_ids": torch.randint(1000, vocab, (args.batch, args.seq)),
        "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long),
        "token_type_ids": torch.zeros(args.batch, args.seq, dtype=torch.long),
    }
    slim = minilm(num_labels=5).eval()
    slim.load_state_dict(dense.state_dict())
    slim, structure = slimmed(slim, inputs, ["heads", "ffn"], args.target, args.round_to)
    whole = 1 - module_flops(slim, inputs)[""] / module_flops(dense, inputs)[""]
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            "dense fp32 torch": dense,
            "slim fp32 torch": slim,
            "dense int8 onnxruntime": to_int8_onnx(dense, inputs, Path(tmp) / "dense.onnx", args.threads)[0],
            "slim int8 onnxruntime": to_int8_onnx(slim, inputs, Path(tmp) / "slim.onnx", args.threads)[0],
        }
        latency = interleaved_ms(models, inputs, args.repeats)
    heads = [layer["kept"] for layer in structure["layers"].values() if layer["kind"] == "heads"]
    widths = [layer["kept"] for layer in structure["layers"].values() if layer["kind"] == "ffn"]
    print(f"threads {torch.get_num_threads()}, batch {args.batch} x seq {args.seq}, median of {args.repeats}")
    print(f"MiniLM slim: heads per layer {heads} (of 12), FFN widths {widths} (of 1536)")
    print(f"  whole-model FLOPs removed (measured): {whole:.3f}")
    report("MiniLM", latency, structure["removed"]["flops"])
    if args.skip_cnn:
        return
    torch.manual_seed(0)
    images = {"pixel_values": torch.randn(args.batch, 1, 28, 28)}
    cnn = ConvNet(10, channels=[32, 64]).eval()
    slim_cnn = ConvNet(10, channels=[32, 64]).eval()
    slim_cnn.load_state_dict(cnn.state_dict())
    slim_cnn, cnn_structure = slimmed(slim_cnn, images, ["channels"], args.target, args.round_to)
    kept = {name: layer["kept"] for name, layer in cnn_structure["layers"].items()}
    latency = interleaved_ms({"dense fp32 torch": cnn, "slim fp32 torch": slim_cnn}, images, args.repeats * 5)
    print(f"ConvNet slim: channels kept {kept} (of 32, 64)")
    report("ConvNet", latency, cnn_structure["removed"]["flops"])


if __name__ == "__main__":
    main()
