"""Training data: the measurement set and its family (with the run's ``[family]`` overrides), the resumable
loader of full batches, and the seeds every random stream of a run derives from (:func:`step_seed`).

The training layer knows no file format: :func:`prepare_data` reads ``data.path`` through ``open_data``
(:mod:`ambient_science.pipelines.training` passes the measurement-file reader).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ambient_science.family import OperatorFamily
from ambient_science.registry import family_from_config
from ambient_science.training.config import RunConfig
from ambient_science.training.distributed import DistInfo, ResumableSampler

__all__ = ["data_sigma_n", "make_loader", "prepare_data", "step_seed"]


def step_seed(seed: int, rank: int, step: int, stream: str = "loss") -> int:
    """A 63-bit seed for one ``(seed, rank, step)`` and a named stream (hash, so nearby inputs decorrelate)."""
    digest = hashlib.blake2b(f"{stream}/{seed}/{rank}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def prepare_data(
    config: RunConfig,
    dataset: Dataset | None = None,
    family: OperatorFamily | None = None,
    *,
    open_data: Callable[[str], Dataset] | None = None,
) -> tuple[Dataset, OperatorFamily]:
    """The measurement set and its operator family, with the config's ``[family]`` overrides applied.

    Without ``dataset``, ``open_data(config.data.path)`` reads it: the training layer knows no file format
    (:func:`ambient_science.pipelines.training.train` passes the measurement-file reader).
    """
    if dataset is None:
        if not config.data.path:
            raise ValueError("no training data: set data.path to a measurement file (or pass a dataset)")
        if open_data is None:
            raise ValueError(
                "pass a dataset, or open_data to read data.path (ambient_science.pipelines.training.train does)"
            )
        dataset = open_data(config.data.path)
    if family is None:
        family = getattr(dataset, "family", None)
        if family is None:
            raise ValueError("pass the operator family: the dataset has no .family")
    base = family.config()
    if "family" in config.family and config.family["family"] != base["family"]:
        raise ValueError(f"[family] names {config.family['family']!r} but the data's family is {base['family']!r}")
    if config.family:
        unknown = sorted(set(config.family) - set(base))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in [family]; the {base['family']} family has {sorted(base)}")
        try:
            family = family_from_config({**base, **config.family})
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"[family] {config.family}: {err}") from err
    return dataset, family


def data_sigma_n(dataset: Dataset) -> dict[str, float] | None:
    """``{"min", "median", "max"}`` of the records' noise levels, from ``dataset.sigma_n`` (the measurement
    sets have it), or None when the dataset does not expose them."""
    values = getattr(dataset, "sigma_n", None)
    if values is None:
        return None
    s = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if s.numel() == 0:
        return None
    return {"min": float(s.min()), "median": float(s.median()), "max": float(s.max())}


def make_loader(
    dataset: Dataset, info: DistInfo, *, batch_size: int, seed: int, num_workers: int = 0
) -> tuple[DataLoader, ResumableSampler]:
    """A loader of this rank's ``batch_size // world_size`` records per step, full batches only."""
    if batch_size % info.world_size:
        raise ValueError(f"train.batch_size {batch_size} is not divisible by the {info.world_size} ranks")
    per_rank = batch_size // info.world_size
    sampler = ResumableSampler(dataset, info, seed=seed)
    if sampler.num_samples < per_rank:
        raise ValueError(f"{len(dataset)} measurements are fewer than one batch of {batch_size}")
    loader = DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=info.device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),  # worker seeds; keeps torch's global RNG untouched
    )
    return loader, sampler


def _epochs(loader: DataLoader, sampler: ResumableSampler, step: int, seed: int, rank: int) -> Iterator[Any]:
    """Batches from global step ``step`` on, epoch after epoch, the same ones an uninterrupted run sees."""
    per_rank = loader.batch_size
    steps_per_epoch = sampler.num_samples // per_rank
    while True:
        epoch, within = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        sampler.set_start(within * per_rank)
        loader.generator.manual_seed(step_seed(seed, rank, epoch, "workers"))
        for batch in loader:
            yield batch
            step += 1


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"
    return {
        "y": batch["y"].to(device, non_blocking=nb),
        "params": {k: v.to(device, non_blocking=nb) for k, v in batch["params"].items()},
        "sigma_n": batch["sigma_n"].to(device, torch.float32, non_blocking=nb),
    }
