"""Data parallelism on torch.distributed, as `torchrun --nproc_per_node=N python -m rwkvbench ...` sets it up.

torchrun starts one process per GPU and tells each its place through the environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT). `init()` joins the process group when there is more than one process (NCCL
on CUDA, gloo on CPU); a plain `python -m rwkvbench` is world size 1 and touches nothing. Each rank runs on
its own device (cuda:LOCAL_RANK), measures its share of the units, and rank 0 reports after a barrier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rwkvbench.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r}: expected an integer (as torchrun sets it)") from None


def env() -> DistEnv:
    """This process's place in the job, from torchrun's environment (one process when unset)."""
    world = _int_env("WORLD_SIZE", 1)
    rank = _int_env("RANK", 0)
    local = _int_env("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank}, WORLD_SIZE={world}: expected 0 <= RANK < WORLD_SIZE")
    return DistEnv(rank, world, local)


def init() -> DistEnv:
    """Join the process group when WORLD_SIZE > 1 (once; later calls return the same place). On CUDA each
    rank takes cuda:LOCAL_RANK as its current device, and NCCL's NVLink multicast stays off unless the
    user set NCCL_NVLS_ENABLE (the lent machines need it off)."""
    e = env()
    if e.world_size == 1 or dist.is_initialized():
        return e
    if torch.cuda.is_available():
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
        if e.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={e.local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
                              f"here: --nproc_per_node must not exceed the GPUs of one machine")
        torch.cuda.set_device(e.local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", e.local_rank))
    else:
        dist.init_process_group("gloo")
    return e


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    return not active() or dist.get_rank() == 0


def barrier() -> None:
    if active():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (e.g. the run folder, which Hydra names by the clock on each rank)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor` (same shape on each) concatenated along the first dimension, in rank order;
    a scalar counts as one element (as accelerate's gather does)."""
    if not active():
        return tensor
    t = tensor.reshape(1) if tensor.dim() == 0 else tensor.contiguous()
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return torch.cat(parts)


def gather_object(obj, dst: int = 0):
    """[rank 0's obj, rank 1's, ...] on `dst`, None elsewhere."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


class Accelerator:
    """The part of accelerate.Accelerator that lm-eval's evaluator calls on a data-parallel model (`gather`,
    `wait_for_everyone`; lm-eval before 0.4.9 reaches for `lm.accelerator`), over torch.distributed."""

    def __init__(self, device):
        self.device = device

    @property
    def num_processes(self) -> int:
        return dist.get_world_size() if active() else 1

    @property
    def process_index(self) -> int:
        return dist.get_rank() if active() else 0

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return all_gather(tensor)

    def wait_for_everyone(self) -> None:
        barrier()


def rank_device(device: str | None, e: DistEnv) -> str | None:
    """The device a rank's model runs on: with several ranks, auto and cuda become cuda:LOCAL_RANK (one GPU
    per process); cpu stays cpu; a fixed cuda:N would put every rank on one GPU and is refused."""
    if e.world_size == 1:
        return device
    if device in (None, "auto"):
        return f"cuda:{e.local_rank}" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return f"cuda:{e.local_rank}"
    if str(device).startswith("cuda:"):
        raise ConfigError(f"device={device} under torchrun (WORLD_SIZE={e.world_size}): every rank would use the "
                          f"same GPU; use device=auto or device=cuda (each rank takes cuda:LOCAL_RANK)")
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
