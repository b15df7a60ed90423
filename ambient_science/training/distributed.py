"""Device selection and data-parallel training through ``torchrun`` (NCCL on GPUs, gloo on CPUs).

``torchrun --nproc_per_node=2 -m ambient_science.cli train config.toml`` starts one process per rank
with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous in the environment (torchrun's
contract); :func:`init_distributed` reads them. A plain ``python`` run is a world of one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler

__all__ = [
    "DistInfo",
    "ResumableSampler",
    "all_reduce_mean",
    "all_reduce_min",
    "barrier",
    "init_distributed",
    "resolve_device",
    "shutdown_distributed",
    "unwrap_model",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run: ``rank`` of ``world_size``, its ``device``; ``owns_group`` when
    :func:`init_distributed` created the process group (and so :func:`shutdown_distributed` ends it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` (this rank's GPU) or ``"cuda:N"``."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {spec!r} requested but CUDA is not available; use --device cpu or auto")
        device = torch.device(spec)
        count = torch.cuda.device_count()
        index = local_rank if device.index is None else device.index
        if index >= count:
            raise RuntimeError(
                f"device {spec!r} for local rank {local_rank} needs CUDA device {index}, but {count} are visible; "
                f"start at most {count} processes per node (torchrun --nproc_per_node={count})"
            )
        return torch.device("cuda", index)
    raise ValueError(f"unknown device {spec!r}; expected auto, cpu, cuda or cuda:N")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistInfo(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns)


def shutdown_distributed(info: DistInfo) -> None:
    """End the process group if :func:`init_distributed` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in one process). Call it before :func:`shutdown_distributed` on a normal exit:
    a gloo rank whose peer tears the group down while it still communicates is aborted at exit ("terminate called
    without an active exception"); not after an error, since the other ranks may never come."""
    if info.distributed:
        dist.barrier()


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` in a multi-process run; ``model`` itself otherwise."""
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def all_reduce_mean(t: Tensor, info: DistInfo) -> Tensor:
    """Mean of ``t`` over ranks (``t`` itself in a single-process run)."""
    if not info.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def all_reduce_min(t: Tensor, info: DistInfo) -> Tensor:
    """Minimum of ``t`` over ranks."""
    if not info.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` (per-epoch permutation from ``seed + epoch``, same on every rank, then
    this rank's share) that can start part-way through an epoch, so a resumed run sees the same batches.

    Call ``set_epoch(e)`` and then ``set_start(i)`` (``i`` = indices of this rank already consumed).
    """

    def __init__(self, dataset: Dataset, info: DistInfo, *, seed: int, shuffle: bool = True):
        super().__init__(
            dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.start = 0

    def set_start(self, start: int) -> None:
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} outside 0..{self.num_samples}")
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start
