"""One trainer for every operator family: ambient (or clean, ``A = I``) EDM training from measurements.

    >>> # from ambient_science.training.config import RunConfig, DataConfig, TrainConfig
    >>> # train(RunConfig(data=DataConfig(path="train.h5"), train=TrainConfig(out_dir="runs/x", steps=1000)))

Pieces (each a small function): data and loader (:func:`prepare_data`, :func:`make_loader`), the
optimisation step (:func:`train_step`), the learning rate (:func:`learning_rate`), checkpoints
(:mod:`ambient_science.training.checkpoint`), logging (:mod:`ambient_science.training.log`), DDP
(:mod:`ambient_science.training.distributed`).

Randomness: no global RNG. Each rank's generator for the loss's draws (``Ã``, ``σ``, ``ε``) is re-seeded
every step from ``(seed, rank, step)``; the data order is a permutation per epoch from ``seed + epoch``;
network initialisation and dropout run under ``torch.random.fork_rng`` with seeds derived the same way.
So a resumed run takes exactly the steps the uninterrupted run would have taken. Torch's global RNG
states are still saved in checkpoints and restored on resume, for code outside the trainer that uses
them (a dataset transform, say).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ambient_science.ema import EMA
from ambient_science.family import OperatorFamily
from ambient_science.network import EDMDenoiser, NetworkConfig, build_network
from ambient_science.registry import family_from_config
from ambient_science.training.checkpoint import CheckpointError, list_checkpoints, load_for_resume, save_checkpoint
from ambient_science.training.config import RunConfig, TrainConfig, resolve_network_config
from ambient_science.training.distributed import (
    DistInfo,
    ResumableSampler,
    all_reduce_mean,
    all_reduce_min,
    init_distributed,
    shutdown_distributed,
    wrap_ddp,
)
from ambient_science.training.log import MetricsLogger, heun_samples, save_image_grid
from ambient_science.training.losses import AmbientLoss, NoisyAmbientLoss, build_loss
from ambient_science.version import __version__

__all__ = [
    "NonFiniteError",
    "TrainResult",
    "learning_rate",
    "make_loader",
    "prepare_data",
    "step_seed",
    "train",
    "train_step",
]


class NonFiniteError(RuntimeError):
    """Too many training steps had a non-finite loss or gradient."""


@dataclass
class TrainResult:
    """The end state of :func:`train` (on every rank)."""

    step: int
    images_seen: int
    skipped_steps: int
    checkpoint: Path | None
    network: nn.Module
    ema: EMA
    config: dict[str, Any]


def step_seed(seed: int, rank: int, step: int, stream: str = "loss") -> int:
    """A 63-bit seed for one ``(seed, rank, step)`` and a named stream (hash, so nearby inputs decorrelate)."""
    digest = hashlib.blake2b(f"{stream}/{seed}/{rank}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def learning_rate(cfg: TrainConfig, images_seen: int) -> float:
    """Linear warm-up to ``cfg.lr`` over ``cfg.warmup_images`` images, then constant."""
    if cfg.warmup_images <= 0:
        return cfg.lr
    return cfg.lr * min(1.0, images_seen / cfg.warmup_images)


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------


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
        family = family_from_config({**base, **config.family})
    return dataset, family


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


# ---------------------------------------------------------------------------------------------------
# one step
# ---------------------------------------------------------------------------------------------------


class _Autocast:
    """Calls the network under bf16 autocast (CUDA only) and returns float32: the loss stays float32."""

    def __init__(self, net: nn.Module, device: torch.device, enabled: bool):
        self.net, self.device_type, self.enabled = net, device.type, enabled

    def __call__(self, x: Tensor, sigma: Tensor, cond: Tensor, project=None) -> Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.enabled):
            return self.net(x, sigma, cond, project=project).float()


@contextlib.contextmanager
def _dropout_rng(seed: int, device: torch.device, enabled: bool):
    """Dropout draws from torch's global RNG: run it under a forked, seeded RNG (no global side effects)."""
    if not enabled:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def train_step(
    model: nn.Module,
    loss_fn: AmbientLoss,
    batch: dict[str, Any],
    *,
    family: OperatorFamily,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    info: DistInfo,
    grad_clip: float = 0.0,
    bf16: bool = False,
    update: bool = True,
) -> tuple[Tensor, Tensor, bool]:
    """One optimisation step on one batch: loss, backward (DDP averages gradients), clip, non-finite guard.

    Returns ``(mean loss of this rank, global gradient norm, finite)``; the optimizer steps only when the
    loss and gradients are finite on every rank (and ``update``).
    """
    batch = _to_device(batch, info.device)
    A = family.make(batch["params"])
    net = _Autocast(model, info.device, bf16 and info.device.type == "cuda")
    kwargs = {"sigma_n": batch["sigma_n"]} if isinstance(loss_fn, NoisyAmbientLoss) else {}
    loss = loss_fn(net, batch["y"], A, generator=generator, **kwargs).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    finite = all_reduce_min((torch.isfinite(loss) & torch.isfinite(grad_norm)).float(), info)
    ok = bool(finite.item() > 0)
    if not ok:
        optimizer.zero_grad(set_to_none=True)
    elif update:
        optimizer.step()
    return loss.detach(), grad_norm.detach(), ok


# ---------------------------------------------------------------------------------------------------
# setup, checkpoints, logging
# ---------------------------------------------------------------------------------------------------


def _init_network(net_cfg: NetworkConfig, cfg: TrainConfig, device: torch.device) -> EDMDenoiser:
    with torch.random.fork_rng(devices=[]):  # reproducible init without touching the caller's RNG
        torch.manual_seed(step_seed(cfg.seed, 0, 0, "init"))
        net = build_network(net_cfg)
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def _run_config_dict(config: RunConfig, net_cfg: NetworkConfig, family: OperatorFamily, sigma_data: float) -> dict:
    plain = config.to_dict()
    return {
        "version": __version__,
        "network": net_cfg.to_dict(),
        "family": family.config(),
        "loss": {**plain["loss"], "sigma_data": sigma_data},
        "train": plain["train"],
        "data": plain["data"],
    }


def _resume_path(cfg: TrainConfig, ckpt_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``cfg.resume`` as a path, ``out_dir``'s latest for ``"auto"``, or none.

    A fresh run never writes over an earlier run's checkpoints."""
    if cfg.resume and cfg.resume != "auto":
        return Path(cfg.resume)
    if cfg.resume == "auto" and (ckpt_dir / "latest").is_file():
        return ckpt_dir
    if list_checkpoints(ckpt_dir):
        raise FileExistsError(
            f"{ckpt_dir} already holds checkpoints; resume (--resume [CHECKPOINT] / train.resume) or pick another "
            "out_dir"
        )
    return None


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    state = {"torch_cpu": torch.get_rng_state(), "train_generator": generator.get_state()}
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore(path: Path, net, ema, optimizer, run_cfg: dict, info: DistInfo) -> tuple[int, dict[str, Any]]:
    state = load_for_resume(path, network=net, ema=ema, optimizer=optimizer, map_location=info.device)
    for key in ("network", "family"):
        if state.config.get(key) != run_cfg[key]:
            raise CheckpointError(
                f"cannot resume from {state.path}: its {key} config {state.config.get(key)} differs from this run's "
                f"{run_cfg[key]}"
            )
    if state.extra.get("world_size", info.world_size) != info.world_size:
        warnings.warn("resuming with a different number of ranks: the data order will differ", stacklevel=3)
    torch.set_rng_state(state.rng_state["torch_cpu"])  # restored for anything outside our generators
    if info.device.type == "cuda" and "torch_cuda" in state.rng_state:
        torch.cuda.set_rng_state(state.rng_state["torch_cuda"], info.device)
    return state.step, state.extra


def _save(ckpt_dir, raw, ema, optimizer, step, generator, run_cfg, extra, cfg, info) -> Path:
    return save_checkpoint(
        ckpt_dir,
        network=raw,
        ema=ema,
        optimizer=optimizer,
        step=step,
        rng_state=_rng_state(generator, info.device),
        config=run_cfg,
        extra=extra,
        keep=cfg.keep_checkpoints,
    )


def _check_nonfinite(skipped: int, cfg: TrainConfig, step: int, loss: Tensor, grad_norm: Tensor) -> None:
    if skipped > cfg.max_nonfinite:
        raise NonFiniteError(
            f"aborting at step {step}: {skipped} steps with a non-finite loss or gradient (limit "
            f"train.max_nonfinite = {cfg.max_nonfinite}; last loss {loss.item():.3g}, grad norm "
            f"{grad_norm.item():.3g}). Lower train.lr, check the data scale against network.sigma_data, "
            "or raise the limit."
        )


def _extra_state(images_seen: int, skipped: int, info: DistInfo, cfg: TrainConfig, dataset: Dataset) -> dict:
    """Training state stored in ``state.json`` beside the weights (all derived state is recomputed)."""
    return {
        "images_seen": images_seen,
        "skipped_steps": skipped,
        "world_size": info.world_size,
        "batch_size": cfg.batch_size,
        "dataset_len": len(dataset),
        "seed": cfg.seed,
    }


def _sample_grid(ema: EMA, family, cfg: TrainConfig, info: DistInfo, out_dir: Path, step: int) -> None:
    g = torch.Generator().manual_seed(step_seed(cfg.seed, 0, 0, "grid"))  # same draws at every interval
    net = _Autocast(ema.module, info.device, cfg.bf16 and info.device.type == "cuda")
    with torch.no_grad():
        x = heun_samples(net, family, cfg.sample_count, steps=cfg.sample_steps, generator=g, device=info.device)
    save_image_grid(x, out_dir / "samples" / f"step-{step:08d}.png")


# ---------------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------------


def train(
    config: RunConfig,
    dataset: Dataset | None = None,
    *,
    family: OperatorFamily | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    open_data: Callable[[str], Dataset] | None = None,
) -> TrainResult:
    """Train a diffusion prior from measurements (``dataset``, or ``open_data(config.data.path)``); see the
    module doc. :func:`ambient_science.pipelines.training.train` reads measurement files.

    ``callback(step, metrics)`` runs on every rank after every step (progress hooks, tests).
    """
    info = init_distributed(config.train.device)
    try:
        return _train(config, dataset, family, info, callback, open_data)
    finally:
        shutdown_distributed(info)


def _train(config, dataset, family, info: DistInfo, callback, open_data) -> TrainResult:
    cfg = config.train
    out_dir, device = Path(cfg.out_dir), info.device
    ckpt_dir = out_dir / "checkpoints"
    dataset, family = prepare_data(config, dataset, family, open_data=open_data)
    net_cfg = resolve_network_config(config.network, family)
    raw = _init_network(net_cfg, cfg, device)
    ema = EMA(raw, cfg.ema_halflife_images, cfg.ema_rampup or None)
    optimizer = torch.optim.AdamW(
        raw.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )
    loss_fn = build_loss(config.loss, family, net_cfg.sigma_data)
    run_cfg = _run_config_dict(config, net_cfg, family, net_cfg.sigma_data)
    generator = torch.Generator(device=device)

    step, extra = 0, {}
    resume = _resume_path(cfg, ckpt_dir)
    if resume is not None:
        step, extra = _restore(resume, raw, ema, optimizer, run_cfg, info)
    images_seen, skipped = int(extra.get("images_seen", step * cfg.batch_size)), int(extra.get("skipped_steps", 0))

    model = wrap_ddp(raw, info)
    if cfg.compile:
        model = torch.compile(model)
    model.train()
    loader, sampler = make_loader(dataset, info, batch_size=cfg.batch_size, seed=cfg.seed, num_workers=cfg.num_workers)
    total = cfg.total_steps()
    dropout = getattr(net_cfg, "dropout", 0.0) > 0

    logger = None
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(run_cfg, indent=2, sort_keys=True) + "\n")
        logger = MetricsLogger(out_dir / "metrics.jsonl", resume_step=step if resume is not None else None)
    bar = tqdm(total=total, initial=step, disable=not (info.is_main and cfg.progress), dynamic_ncols=True)
    last_ckpt: Path | None = None
    saved_at = step if resume is not None else -1
    window = _LossWindow(device)
    try:
        batches = _epochs(loader, sampler, step, cfg.seed, info.rank)
        while step < total:
            batch = next(batches)
            generator.manual_seed(step_seed(cfg.seed, info.rank, step))
            lr = learning_rate(cfg, images_seen + cfg.batch_size)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with _dropout_rng(step_seed(cfg.seed, info.rank, step, "dropout"), device, dropout):
                loss, grad_norm, ok = train_step(
                    model, loss_fn, batch, family=family, optimizer=optimizer, generator=generator, info=info,
                    grad_clip=cfg.grad_clip, bf16=cfg.bf16,
                )  # fmt: skip
            step += 1
            images_seen += cfg.batch_size
            window.add(loss, ok)
            if ok:
                ema.update(raw, images_seen, cfg.batch_size)
            else:
                skipped += 1
                _check_nonfinite(skipped, cfg, step, loss, grad_norm)
            metrics = {"step": step, "images": images_seen, "lr": lr, "skipped": skipped}
            if step % cfg.log_every == 0 or step == total:
                metrics.update(window.flush(info, cfg.batch_size, grad_norm))
                if logger is not None:
                    logger.log({**metrics, "epoch": step * cfg.batch_size / len(dataset), "time": time.time()})
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
            bar.update(1)
            extra = _extra_state(images_seen, skipped, info, cfg, dataset)
            if info.is_main and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                last_ckpt, saved_at = (
                    _save(ckpt_dir, raw, ema, optimizer, step, generator, run_cfg, extra, cfg, info),
                    step,
                )
            if info.is_main and cfg.sample_every and step % cfg.sample_every == 0:
                _sample_grid(ema, family, cfg, info, out_dir, step)
            if callback is not None:
                callback(step, metrics)
        if info.is_main and saved_at != step:
            last_ckpt = _save(ckpt_dir, raw, ema, optimizer, step, generator, run_cfg, extra, cfg, info)
        elif info.is_main and last_ckpt is None and resume is not None:
            last_ckpt = Path(resume)
    finally:
        bar.close()
        if logger is not None:
            logger.close()
    return TrainResult(step, images_seen, skipped, last_ckpt, raw, ema, run_cfg)


class _LossWindow:
    """Mean loss and speed over the steps since the last log line."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), device=device)
        self._reset()

    def _reset(self) -> None:
        self.total.zero_()
        self.finite_steps, self.steps, self.start = 0, 0, time.perf_counter()

    def add(self, loss: Tensor, ok: bool) -> None:
        self.steps += 1
        if ok:
            self.total += loss
            self.finite_steps += 1

    def flush(self, info: DistInfo, batch_size: int, grad_norm: Tensor) -> dict[str, float]:
        """Loss averaged over steps and ranks (a collective: every rank calls it at the same steps)."""
        mean = all_reduce_mean(self.total / max(self.finite_steps, 1), info).item()
        elapsed = time.perf_counter() - self.start
        out = {
            "loss": mean if self.finite_steps else float("nan"),
            "grad_norm": float(grad_norm.item()),
            "sec_per_step": elapsed / max(self.steps, 1),
            "images_per_s": self.steps * batch_size / max(elapsed, 1e-9),
        }
        self._reset()
        return out
