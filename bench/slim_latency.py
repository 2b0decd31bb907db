"""Latency of slimmed models (units cut out by `pruner=slim`) as ratios against the dense ones, timed interleaved.

MiniLM (the bundled all-MiniLM-L6-v2, fresh 5-way head) with `--target` of its encoder's FLOPs removed as heads and
FFN neurons (magnitude scores, oneshot; FLOPs counted by FlopCounterMode at the bench's sequence length), batch 32 x
64 tokens: fp32 PyTorch and int8 ONNX Runtime (`export/onnx.to_int8_onnx`), dense and slim. Then the project's
ConvNet (`conf/model/cnn.yaml`, 28x28 inputs) with the same fraction of its FLOPs removed as conv channels, fp32
PyTorch. The models of a family run interleaved in one process (each repeat times every model once, in rotating
order: models/timing.py, what every run's `compression.latency` uses), so load from other processes hits them
alike; every figure is a ratio against the dense fp32 model, beside the ideal 1 - removed FLOPs. The removed
fractions are measured on the slim models (run/shapes.py), not taken from the pruner. Every timing starts from the
same allocator state (`timing.steady_allocator`), so a figure does not depend on what the process ran before it.

    PYTHONPATH=src python bench/slim_latency.py [--target 0.5] [--repeats 20] [--threads N] [--round-to 8]
    PYTHONPATH=src python bench/slim_latency.py --skip-minilm --cnn-batches 32,256   # the CNN at two batch sizes
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from compress_sweeps.export.onnx import to_int8_onnx
from compress_sweeps.hooks import RunContext
from compress_sweeps.models import ConvNet, minilm
from compress_sweeps.models.structure import heads_of
from compress_sweeps.models.timing import interleaved_ms, machine
from compress_sweeps.pruners.criteria import Magnitude
from compress_sweeps.pruners.slim import SlimPruner
from compress_sweeps.run.shapes import costs


def slimmed(dense: nn.Module, inputs: dict, units: list[str], target: float, round_to: int) -> tuple[nn.Module, dict]:
    """A copy of `dense` with `target` of its prunable FLOPs cut out (oneshot, magnitude), and what was removed,
    measured against `dense` on the bench's inputs."""
    model = copy.deepcopy(dense)
    rows = [{k: v[0] for k, v in inputs.items()}]
    context = RunContext(1, 5, torch.device("cpu"), input_keys=list(inputs), train_set=rows)
    pruner = SlimPruner(Magnitude, target, units, "flops", start_step=0, end_step=0, round_to=round_to)
    pruner.attach(model, context)
    promise = pruner.spec().structure
    model = pruner.finalize(model).eval()
    one = {k: v[:1] for k, v in inputs.items()}
    return model, costs(model, dense, [promise], one)


def report(title: str, latency: dict[str, float], measured: dict) -> None:
    removed = measured["removed"]["flops"]
    whole = 1 - measured["flops"]["model_after"] / measured["flops"]["model_before"]
    print(
        f"{title}: removed {removed:.3f} of the prunable FLOPs ({whole:.3f} of the whole model's), "
        f"ideal ratio {1 - removed:.3f}"
    )
    for name, ms in latency.items():
        print(f"  {name:>22}: {ms:8.1f} ms   ratio vs dense fp32 {ms / latency['dense fp32 torch']:.3f}")


def time_minilm(args: argparse.Namespace) -> None:
    """MiniLM dense and slim, fp32 and int8, interleaved; its models and ONNX Runtime sessions end with this call,
    before anything else is timed."""
    torch.manual_seed(0)
    dense = minilm(num_labels=5).eval()
    vocab = dense.config.vocab_size
    inputs = {
        "input_ids": torch.randint(1000, vocab, (args.batch, args.seq)),
        "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long),
        "token_type_ids": torch.zeros(args.batch, args.seq, dtype=torch.long),
    }
    slim, measured = slimmed(dense, inputs, ["heads", "ffn"], args.target, args.round_to)
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            "dense fp32 torch": dense,
            "slim fp32 torch": slim,
            "dense int8 onnxruntime": to_int8_onnx(dense, inputs, Path(tmp) / "dense.onnx", args.threads)[0],
            "slim int8 onnxruntime": to_int8_onnx(slim, inputs, Path(tmp) / "slim.onnx", args.threads)[0],
        }
        latency = interleaved_ms(models, inputs, args.repeats)
    heads = [heads_of(m) for m in slim.modules() if heads_of(m) is not None]
    widths = [b.intermediate.dense.out_features for b in slim.bert.encoder.layer]
    print(f"batch {args.batch} x seq {args.seq}, median of {args.repeats} interleaved repeats")
    print(f"MiniLM slim: heads per layer {heads} (of 12), FFN widths {widths} (of 1536)")
    report("MiniLM", latency, measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=0.5, help="fraction of the prunable FLOPs to remove")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--round-to", type=int, default=8, help="kept FFN widths / channels: multiples of this")
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads")
    parser.add_argument("--skip-cnn", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--cnn-batches", default=None, help="comma-separated CNN batch sizes (default: --batch)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{machine()}, threads {torch.get_num_threads()}, torch {torch.__version__}, load {os.getloadavg()[0]:.2f}")
    if not args.skip_minilm:
        time_minilm(args)
        gc.collect()  # no idle ONNX Runtime session or cached MiniLM buffers while the CNN is timed
    if not args.skip_cnn:
        for batch in [int(b) for b in (args.cnn_batches or str(args.batch)).split(",")]:
            torch.manual_seed(0)
            images = {"pixel_values": torch.randn(batch, 1, 28, 28)}
            cnn = ConvNet(10, channels=[32, 64]).eval()
            slim_cnn, measured = slimmed(cnn, images, ["channels"], args.target, args.round_to)
            kept = [m.out_channels for m in slim_cnn.modules() if isinstance(m, nn.Conv2d)]
            latency = interleaved_ms({"dense fp32 torch": cnn, "slim fp32 torch": slim_cnn}, images, args.repeats * 5)
            print(f"ConvNet slim: channels kept {kept} (of [32, 64]), batch {batch}, median of {args.repeats * 5}")
            report("ConvNet", latency, measured)
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
