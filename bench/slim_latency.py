"""Latency of slimmed models (units cut out by `pruner=slim`) as ratios against the dense ones, timed interleaved.

MiniLM (the bundled all-MiniLM-L6-v2, fresh 5-way head) with `--target` of its encoder's FLOPs removed as heads and
FFN neurons (magnitude scores, oneshot; FLOPs counted by FlopCounterMode at the bench's sequence length), batch 32 x
64 tokens: fp32 PyTorch and int8 ONNX Runtime (`export/onnx.to_int8_onnx`), dense and slim. Then each CNN of
`--cnns` (`conf/model/<name>.yaml`, as a run builds it; 28x28 inputs) with the same fraction of its FLOPs removed as
conv channels, fp32 PyTorch and both int8 ONNX Runtime exports: dynamic (`export=onnxruntime`, Linear layers
int8, convolutions fp32) and static (`export=onnxruntime_static`, convolutions, pooling and ReLU int8 too). The
models of a family run interleaved in one process (each repeat times every model once, in rotating order, each
timed call right after an untimed one of the same model: models/timing.py, what every run's `compression.latency`
uses), so load from other processes hits them alike; every figure is a ratio against the dense fp32 model, beside
the ideal 1 - removed FLOPs. The removed fractions are measured on the slim models (run/shapes.py), not taken from
the pruner. Every timing starts from the same allocator state (`timing.steady_allocator`). `--layers` adds where a
CNN's time goes: each layer's median time in the dense and the slim model (forward hooks, the models again
interleaved), which shows what FLOPs do not count. `--widths` times other shapes of the same CNN beside the dense
and the slim one (per-stage channel counts, random weights: speed only), to see whether another split of the same
FLOPs would have run faster than the one the budget chose.

    PYTHONPATH=src python bench/slim_latency.py [--target 0.5] [--repeats 20] [--threads N] [--round-to 8]
    PYTHONPATH=src python bench/slim_latency.py --skip-minilm --cnn-batches 32,256 --layers
    PYTHONPATH=src python bench/slim_latency.py --skip-minilm --cnns cnn --widths 16,64/24,40/32,32
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import nn

from compress_sweeps.config import compose_train
from compress_sweeps.export.onnx import to_int8_onnx
from compress_sweeps.export.onnx_static import to_int8_onnx_static
from compress_sweeps.hooks import RunContext
from compress_sweeps.models import minilm
from compress_sweeps.models.costs import module_flops
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


def fp32_and_int8(dense: nn.Module, slim: nn.Module, inputs: dict, folder: Path, threads: int | None) -> dict:
    """The models every family times: dense and slim in fp32 PyTorch and through the dynamic int8 ONNX Runtime
    export (written to `folder`), keyed by the names `report` prints."""
    return {
        "dense fp32 torch": dense,
        "slim fp32 torch": slim,
        "dense int8 onnxruntime": to_int8_onnx(dense, inputs, folder / "dense.onnx", threads)[0],
        "slim int8 onnxruntime": to_int8_onnx(slim, inputs, folder / "slim.onnx", threads)[0],
    }


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
        latency = interleaved_ms(fp32_and_int8(dense, slim, inputs, Path(tmp), args.threads), inputs, args.repeats)
    heads = [heads_of(m) for m in slim.modules() if heads_of(m) is not None]
    widths = [b.intermediate.dense.out_features for b in slim.bert.encoder.layer]
    print(f"batch {args.batch} x seq {args.seq}, median of {args.repeats} interleaved repeats")
    print(f"MiniLM slim: heads per layer {heads} (of 12), FFN widths {widths} (of 1536)")
    report("MiniLM", latency, measured)


def cnn_of(name: str, **overrides) -> nn.Module:
    """The CNN `model=<name>` builds in a run (10 classes), with `overrides` of its constructor's arguments."""
    return instantiate(compose_train([f"model={name}", "task=mnist5k"]).model, num_labels=10, **overrides).eval()


class LayerClock:
    """Forward hooks on every leaf module: the time from each leaf's input to its output, per call, in a list per
    leaf name (the models here run their leaves one after another)."""

    def __init__(self, model: nn.Module) -> None:
        self.times: dict[str, list[float]] = {}
        self.handles = []
        for name, module in model.named_modules():
            if not list(module.children()):
                self.times[name] = []
                self.handles.append(module.register_forward_pre_hook(self._start))
                self.handles.append(module.register_forward_hook(functools.partial(self._stop, name)))

    def _start(self, module, args) -> None:
        self.started = time.perf_counter()

    def _stop(self, name, module, args, output) -> None:
        self.times[name].append(1e3 * (time.perf_counter() - self.started))

    def medians(self) -> dict[str, float]:
        for handle in self.handles:
            handle.remove()
        return {name: statistics.median(t) for name, t in self.times.items() if t}


def print_layers(dense: nn.Module, slim: nn.Module, images: dict, repeats: int) -> None:
    """Each leaf's median time in the dense and the slim model, timed interleaved; the leaves' sums beside them."""
    clocks = {"dense": LayerClock(dense), "slim": LayerClock(slim)}
    interleaved_ms({"dense": dense, "slim": slim}, images, repeats)
    dense_ms, slim_ms = clocks["dense"].medians(), clocks["slim"].medians()
    print(f"  {'layer':>22}  dense ms  slim ms  ratio")
    for name, ms in dense_ms.items():
        print(f"  {name:>22}  {ms:8.3f}  {slim_ms[name]:7.3f}  {slim_ms[name] / ms:5.2f}")
    convs = [name for name, module in dense.named_modules() if isinstance(module, nn.Conv2d)]
    sums = {
        "convolutions": convs,
        "everything else": [name for name in dense_ms if name not in convs],
        "sum of layers": list(dense_ms),
    }
    for title, names in sums.items():
        total_dense, total_slim = sum(dense_ms[n] for n in names), sum(slim_ms[n] for n in names)
        print(f"  {title:>22}  {total_dense:8.3f}  {total_slim:7.3f}  {total_slim / total_dense:5.2f}")


def print_widths(name: str, dense: nn.Module, slim: nn.Module, images: dict, args: argparse.Namespace) -> None:
    """The CNN `name` at each per-stage width of `--widths` (random weights), timed interleaved with `dense` and
    `slim`: kept FLOPs and latency, both against `dense`."""
    one = {k: v[:1] for k, v in images.items()}
    shapes = {"dense": dense, "slim (the budget's)": slim}
    for widths in args.widths.split("/"):
        shapes[f"stages {widths}"] = cnn_of(name, channels=[int(w) for w in widths.split(",")])
    latency = interleaved_ms(shapes, images, args.repeats * 5)
    dense_flops = module_flops(dense, one)[""]
    print(f"  {'shape':>22}  kept FLOPs  latency ratio vs dense fp32")
    for title, model in shapes.items():
        kept = module_flops(model, one)[""] / dense_flops
        print(f"  {title:>22}  {kept:10.3f}  {latency[title] / latency['dense']:.3f}")


def time_cnn(name: str, batch: int, args: argparse.Namespace) -> None:
    """The CNN of `model=<name>` dense and slim, fp32 torch and both int8 ONNX Runtime exports (dynamic: Linear
    layers only; static: convolutions too), interleaved at `batch`."""
    torch.manual_seed(0)
    images = {"pixel_values": torch.randn(batch, 1, 28, 28)}
    dense = cnn_of(name)
    slim, measured = slimmed(dense, images, ["channels"], args.target, args.round_to)
    widths = [m.out_channels for m in dense.modules() if isinstance(m, nn.Conv2d)]
    kept = [m.out_channels for m in slim.modules() if isinstance(m, nn.Conv2d)]
    with tempfile.TemporaryDirectory() as tmp:
        models = fp32_and_int8(dense, slim, images, Path(tmp), args.threads)
        for kind, model in (("dense", dense), ("slim", slim)):  # static ranges from the timed batch: speed only
            static = to_int8_onnx_static(model, [images], Path(tmp) / f"{kind}.static.onnx", threads=args.threads)
            models[f"{kind} int8 static ort"] = static[0]
        latency = interleaved_ms(models, images, args.repeats * 5)
    print(f"model={name} slim: channels kept {kept} (of {widths}), batch {batch}, median of {args.repeats * 5}")
    report(f"model={name}", latency, measured)
    if args.layers:
        print_layers(dense, slim, images, args.repeats * 5)
    if args.widths:
        print_widths(name, dense, slim, images, args)
    gc.collect()


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
    parser.add_argument("--cnns", default="cnn,cnn_teacher", help="comma-separated conf/model options to time")
    parser.add_argument("--layers", action="store_true", help="each CNN layer's time, dense and slim")
    parser.add_argument("--widths", default=None, help="other per-stage CNN widths to time, e.g. 16,64/32,32")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{machine()}, threads {torch.get_num_threads()}, torch {torch.__version__}, load {os.getloadavg()[0]:.2f}")
    if not args.skip_minilm:
        time_minilm(args)
        gc.collect()  # no idle ONNX Runtime session or cached MiniLM buffers while the CNN is timed
    if not args.skip_cnn:
        for name in args.cnns.split(","):
            for batch in [int(b) for b in (args.cnn_batches or str(args.batch)).split(",")]:
                time_cnn(name, batch, args)
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
