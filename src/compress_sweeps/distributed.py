"""One run on several processes (`torchrun --nproc_per_node N -m compress_sweeps ...`): torch distributed glue.

Every function here is a no-op (or the plain single-process behaviour) unless the run was started by a launcher
that sets WORLD_SIZE > 1 (torchrun, `accelerate launch`). Then:

- `setup()` (in the CLI, before Hydra) joins the process group (gloo on CPU, plus nccl for CUDA tensors) and shares
  rank 0's clock, so `${cs_now:...}` in `hydra.run.dir` names the same folder on every rank;
- the trainer wraps the model in DistributedDataParallel *after* the compressors attached (hooks, masks and shadow
  weights see the plain model), gives each rank its own shard of every shuffled epoch, and evaluates on rank 0
  only, broadcasting the metrics so all ranks return the same numbers;
- gradients are averaged by DDP, so gradient-based pruning scores and masks agree on all ranks by construction;
  what a method computes from *local activations* is synchronized where it is computed (Q8BERT's activation
  ranges take the min/max over all ranks' batches) and normalization running statistics are averaged;
- `check_state()` hashes every parameter, buffer (masks included) and tensor of each method's `state_dict()`,
  gathers the hashes and says whether all ranks agree: results.json records it and the run fails if they do not;
- only rank 0 writes results.json, model.safetensors, caches and logs to W&B.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset, RandomSampler, Sampler

T = TypeVar("T")
_shared_now: datetime | None = None  # rank 0's clock, shared at setup; the run folder's time stamp


def world_size() -> int:
    """Processes of this run: from the launcher's environment, so it is known before the group is joined."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True on the process that writes files and logs (rank 0), and in every single-process run."""
    return rank() == 0


def active() -> bool:
    """True when this process is one of several joined in a process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup() -> None:
    """Join the process group when launched with WORLD_SIZE > 1, and share rank 0's clock for the run folder."""
    global _shared_now
    if world_size() <= 1 or active():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    stamp = [datetime.now() if is_main() else None]
    dist.broadcast_object_list(stamp, src=0)
    _shared_now = stamp[0]


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_overrides() -> list[str]:
    """Hydra overrides for ranks > 0: they write no `.hydra/` folder or log file into rank 0's run folder."""
    return ["hydra.output_subdir=null", "hydra/job_logging=stdout"] if world_size() > 1 and not is_main() else []


def now(pattern: str) -> str:
    """Resolver `${cs_now:%Y-%m-%d_%H-%M-%S}`: Hydra's `now`, but rank 0's time on every rank of one run."""
    return (_shared_now or datetime.now()).strftime(pattern)


def register_resolver() -> None:
    if not OmegaConf.has_resolver("cs_now"):
        OmegaConf.register_new_resolver("cs_now", now, use_cache=True)  # cached: one value per process, as `now`


def local_device(device: torch.device) -> torch.device:
    """A CUDA device becomes this process's GPU (cuda:LOCAL_RANK) when several processes share a machine."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module the training loop calls: DistributedDataParallel around `model` when distributed, else `model`.

    Buffers are not broadcast from rank 0 before every forward (DDP's default): masks are computed identically on
    every rank, and broadcasting them would hide a rank that went astray from `check_state`; normalization running
    statistics are averaged by `sync_running_stats` instead.
    """
    if not active():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # torch >= 2.13 renames the switch (and keeps the sync at construction, which is what we want)
    renamed = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
    no_forward_sync = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
    return ddp(model, device_ids=device_ids, **no_forward_sync)


class ShardSampler(Sampler[int]):
    """Rank r's share (every world-th index from r) of one shuffled permutation that all ranks draw alike."""

    def __init__(self, size: int, generator: torch.Generator, rank: int, world: int) -> None:
        self.size, self.generator, self.rank, self.world = size, generator, rank, world

    def __iter__(self):
        yield from torch.randperm(self.size, generator=self.generator)[self.rank :: self.world].tolist()

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world))


def shuffled(dataset: Dataset, generator: torch.Generator) -> Sampler[int]:
    """The training sampler of one epoch: a shuffle (single process) or this rank's shard of the same shuffle.

    `generator` is seeded alike on every rank, so the ranks' shards of an epoch never overlap.
    """
    if not active():
        return RandomSampler(dataset, generator=generator)
    return ShardSampler(len(dataset), generator, dist.get_rank(), dist.get_world_size())


def on_rank_zero(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn` on rank 0 only and give its (picklable) result to every rank; just `fn(...)` in one process."""
    if not active():
        return fn(*args, **kwargs)
    box = [fn(*args, **kwargs) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


@torch.no_grad()
def global_min_max(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The min and max over all ranks' values (one all-reduce): the range of the global batch."""
    if not active():
        return low, high
    both = torch.stack([-low, high])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return -both[0], both[1]


@torch.no_grad()
def sync_running_stats(model: nn.Module) -> None:
    """Average the running statistics of normalization layers (BatchNorm), which each rank updates on its shard."""
    if not active():
        return
    stats = [
        buffer
        for module in model.modules()
        if hasattr(module, "running_mean")
        for name, buffer in module.named_buffers(recurse=False)
        if buffer is not None and buffer.is_floating_point() and name.startswith("running_")
    ]
    for buffer in stats:
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        buffer.div_(dist.get_world_size())


def _digest(tensor: torch.Tensor) -> str:
    tensor = tensor.detach().cpu().contiguous()
    return hashlib.sha256(tensor.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def state_tensors(state: Any, prefix: str, found: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor in a `state_dict()` (nested dicts and lists), by path (`0.Pruner[groups][0][masks][1]`)."""
    if isinstance(state, torch.Tensor):
        found[prefix] = state
    elif isinstance(state, dict):
        for key, value in state.items():
            state_tensors(value, f"{prefix}[{key}]", found)
    elif isinstance(state, list | tuple):
        for i, value in enumerate(state):
            state_tensors(value, f"{prefix}[{i}]", found)
    return found


def check_state(model: nn.Module, compressors: Any) -> dict[str, Any] | None:
    """Whether weights, buffers (masks) and compressor state are bit-identical on all ranks; None in one process.

    Each rank hashes every tensor; rank 0 compares the gathered hashes. Returns `world_size`, `backend`,
    `state_identical`, `tensors_checked` and, when they differ, the first names that differ.
    """
    if not active():
        return None
    tensors = {f"model.{n}": t for n, t in model.named_parameters()} | {
        f"model.{n}": t for n, t in model.named_buffers()
    }
    for key, state in compressors.state_dict().items():  # what a checkpoint would restore (hooks.Stateful)
        state_tensors(state, key, tensors)
    digests = {name: _digest(t) for name, t in tensors.items()}
    gathered: list[dict[str, str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, digests)
    reference = gathered[0]
    differing = sorted(
        {
            name
            for other in gathered[1:]
            for name in reference.keys() | other.keys()
            if reference.get(name) != other.get(name)
        }
    )
    report = {
        "world_size": dist.get_world_size(),
        "backend": str(dist.get_backend()),
        "state_identical": not differing,
        "tensors_checked": len(reference),
    }
    if differing:
        report["differing"] = differing[:20]
    return report
