"""One trainer for every operator family: ambient (or clean, ``A = I``) EDM training from measurements.

    >>> # from ambient_science.training.config import RunConfig, DataConfig, TrainConfig
    >>> # train(RunConfig(data=DataConfig(path="train.h5"), train=TrainConfig(out_dir="runs/x", steps=1000)))

Pieces (each a small function): data and loader (:mod:`ambient_science.training.data`), the
optimisation step (:func:`train_step`), the learning rate (:func:`learning_rate`), checkpoints
(:mod:`ambient_science.training.checkpoint`), logging (:mod:`ambient_science.training.log`), DDP
(:mod:`ambient_science.training.distributed`).

Randomness: no global RNG. Each rank's generator for the loss's draws (``Ã``, ``σ``, ``ε``) is re-seeded
every step from ``(seed, rank, step)``; the data order is a permutation per epoch from ``seed + epoch``;
network initialisation and dropout run under ``torch.random.fork_rng`` with seeds derived the same way.
So a resumed run takes exactly the steps the uninterrupted run would have taken. Torch's global RNG
states are still saved in checkpoints and restored on resume, for code outside the trainer that uses
them (a dataset transform, say).

Stopping: ``train.max_minutes`` (wall clock) or a SIGTERM / SIGINT (what batch schedulers send before they
kill a job; the first one only, a second acts as usual) ends the run after the current step with a
checkpoint; :attr:`TrainResult.stopped` says why, and ``resume`` continues it.

The noise levels ``σ_n`` of the training records (min, median, max) are stored in the run config
(``loss.sigma_n``): the noisy-ambient loss never trains the network below a record's ``σ_n``, so samplers
stop there (:attr:`ambient_science.sampling.prior.Prior.sigma_n`).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from ambient_science.ema import EMA
from ambient_science.family import OperatorFamily
from ambient_science.network import EDMDenoiser, NetworkConfig, build_network
from ambient_science.threads import retune
from ambient_science.training.checkpoint import CheckpointError, list_checkpoints, load_for_resume, save_checkpoint
from ambient_science.training.config import RunConfig, TrainConfig, resolve_network_config
from ambient_science.training.data import _epochs, _to_device, data_sigma_n, make_loader, prepare_data, step_seed
from ambient_science.training.distributed import (
    DistInfo,
    all_reduce_mean,
    all_reduce_min,
    barrier,
    init_distributed,
    shutdown_distributed,
    wrap_ddp,
)
from ambient_science.training.log import MetricsLogger, heun_samples, save_image_grid
from ambient_science.training.losses import (
    AUTO_HIDDEN_WEIGHT_FAMILIES,
    AmbientLoss,
    NoisyAmbientLoss,
    auto_hidden_weight,
    build_loss,
    hidden_weight_operators,
)
from ambient_science.version import __version__

__all__ = [
    "NonFiniteError",
    "TrainResult",
    "data_sigma_n",
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
    stopped: str | None = None  # why the run ended before its last step (time budget, signal), else None
    signal: int = 0  # the signal that stopped it (0: none)


def learning_rate(cfg: TrainConfig, images_seen: int) -> float:
    """Linear warm-up to ``cfg.lr`` over ``cfg.warmup_images`` images, then constant."""
    if cfg.warmup_images <= 0:
        return cfg.lr
    return cfg.lr * min(1.0, images_seen / cfg.warmup_images)


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


def compiled_gradient_error(
    compiled: nn.Module,
    eager: nn.Module,
    loss_fn: AmbientLoss,
    batch: dict[str, Any],
    family: OperatorFamily,
    optimizer: torch.optim.Optimizer,
    info: DistInfo,
    *,
    bf16: bool = False,
    seed: int = 0,
    perturb: float = 0.05,
) -> float:
    """``‖g_compiled − g_eager‖ / ‖g_eager‖`` over all parameters for one batch, the same draws for both.

    ``torch.compile`` can change a network's gradients, not only its speed: inductor's CPU code for this U-Net's
    backward (torch 2.13) gives parameter gradients 10–50 % off the eager ones while the forward agrees to 1e-6.
    Run with dropout off (eval mode), the weights moved by ``perturb`` × N(0, 1) and then restored: at
    initialisation the zero output layers stop every gradient but theirs, which would hide an error further in.
    Leaves no gradients and the training mode as it was.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved = [p.detach().clone() for p in params]
    g = torch.Generator(device=params[0].device).manual_seed(seed)
    grads, training = [], eager.training
    eager.eval()  # dropout off: compiled code draws its masks from other random streams
    try:
        with torch.no_grad():
            for p in params:
                p.add_(perturb * torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype))
        for model in (eager, compiled):
            generator = torch.Generator(device=info.device).manual_seed(seed)
            train_step(model, loss_fn, batch, family=family, optimizer=optimizer, generator=generator, info=info,
                       bf16=bf16, update=False)  # fmt: skip
            grads.append(torch.cat([torch.zeros(p.numel(), device=p.device) if p.grad is None else
                                    p.grad.detach().float().reshape(-1) for p in params]))  # fmt: skip
    finally:
        eager.train(training)
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)
    ref, new = grads
    return float((new - ref).norm() / ref.norm().clamp_min(1e-30))


# fp32 / bf16 tolerances of ``compiled_gradient_error``: kernels reassociate sums (and TF32, bf16 round), a
# miscompiled backward is off by 0.1 or more
COMPILE_GRAD_TOL = {False: 1e-2, True: 5e-2}


def _checked_compile(compiled, eager, loss_fn, batch, family, optimizer, info: DistInfo, cfg: TrainConfig):
    """The compiled model if its gradients on the first batch match the eager ones, else the eager model."""
    bf16 = cfg.bf16 and info.device.type == "cuda"
    err = compiled_gradient_error(compiled, eager, loss_fn, batch, family, optimizer, info, bf16=bf16, seed=cfg.seed)
    if err <= COMPILE_GRAD_TOL[bf16]:
        return compiled
    warnings.warn(
        f"torch.compile changed the gradients on the first batch (relative error {err:.2g} > "
        f"{COMPILE_GRAD_TOL[bf16]:g} on {info.device.type}): training without compile",
        RuntimeWarning,
        stacklevel=3,
    )
    return eager


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


def _resolve_hidden_weight(config: RunConfig, dataset: Dataset, family: OperatorFamily) -> tuple[RunConfig, str | None]:
    """``loss.hidden_weight = "auto"`` as a number (recorded in the run's config): :func:`~ambient_science.training.
    losses.auto_hidden_weight` on the operators of up to 64 training records spread over the dataset; with a line
    saying so where it was estimated (else ``None``)."""
    if config.loss.hidden_weight != "auto":
        return config, None
    value, source, estimated = 1.0, "", False  # 1, the plain loss, for families where the factor was not measured
    if family.name in AUTO_HIDDEN_WEIGHT_FAMILIES and len(dataset) > 0:
        estimated = True
        n = min(64, len(dataset))
        records = [dataset[i * len(dataset) // n] for i in range(n)]
        value = auto_hidden_weight(family, hidden_weight_operators(family, records))
        source = f"1 / P(A observed an entry that Ã hid), estimated on {n} training records"
    resolved = replace(config, loss=replace(config.loss, hidden_weight=value))
    return resolved, (f"loss.hidden_weight = 'auto': {value:g} ({source})" if estimated else None)


def _run_config_dict(
    config: RunConfig, net_cfg: NetworkConfig, family: OperatorFamily, sigma_data: float, sigma_n=None
) -> dict:
    plain = config.to_dict()
    loss = {**plain["loss"], "sigma_data": sigma_data}
    if sigma_n is not None:
        loss["sigma_n"] = sigma_n
    return {
        "version": __version__,
        "network": net_cfg.to_dict(),
        "family": family.config(),
        "loss": loss,
        "train": plain["train"],
        "data": plain["data"],
    }


def _resume_path(cfg: TrainConfig, ckpt_dir: Path, info: DistInfo | None = None) -> Path | None:
    """The checkpoint to resume from: ``cfg.resume`` as a path, ``out_dir``'s latest for ``"latest"`` (which
    must exist) and ``"auto"`` (if any: else a fresh start, said on stderr), or none.

    A fresh run never writes over an earlier run's checkpoints."""
    if cfg.resume and cfg.resume not in ("auto", "latest"):
        return Path(cfg.resume)
    if cfg.resume in ("auto", "latest") and (ckpt_dir / "latest").is_file():
        return ckpt_dir
    if cfg.resume == "latest":
        raise CheckpointError(
            f"nothing to resume: {ckpt_dir} holds no checkpoint ('latest' pointer missing); drop --resume to start "
            'fresh, or pass --resume=auto (train.resume = "auto") to resume only when there is one'
        )
    if list_checkpoints(ckpt_dir):
        raise FileExistsError(
            f"{ckpt_dir} already holds checkpoints; resume (--resume [CHECKPOINT] / train.resume) or pick another "
            "out_dir"
        )
    if cfg.resume == "auto" and (info is None or info.is_main):
        print(f"note: no checkpoint in {ckpt_dir} to resume from (train.resume = 'auto'); starting a new run",
              file=sys.stderr)  # fmt: skip
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
    if state.config.get("loss") != run_cfg["loss"]:
        warnings.warn(
            f"resuming {state.path} with a different loss config: {state.config.get('loss')} in the checkpoint, "
            f"{run_cfg['loss']} now (e.g. loss.hidden_weight, whose default became 'auto'); training goes on with "
            "the new one",
            stacklevel=3,
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
    initialize: Callable[[nn.Module], None] | None = None,
) -> TrainResult:
    """Train a diffusion prior from measurements (``dataset``, or ``open_data(config.data.path)``); see the
    module doc. :func:`ambient_science.pipelines.training.train` reads measurement files.

    ``callback(step, metrics)`` runs on every rank after every step (progress hooks, tests).
    ``initialize(network)`` runs on the freshly built network before the EMA copies it (e.g. a warm start from
    another prior's weights); a resumed run restores its checkpoint over it.
    """
    info = init_distributed(config.train.device)
    try:
        result = _train(config, dataset, family, info, callback, open_data, initialize)
        barrier(info)  # rank 0 may still be writing the last checkpoint
        return result
    finally:
        shutdown_distributed(info)


def _train(config, dataset, family, info: DistInfo, callback, open_data, initialize=None) -> TrainResult:
    cfg = config.train
    out_dir, device = Path(cfg.out_dir), info.device
    ckpt_dir = out_dir / "checkpoints"
    dataset, family = prepare_data(config, dataset, family, open_data=open_data)
    net_cfg = resolve_network_config(config.network, family)
    raw = _init_network(net_cfg, cfg, device)
    if initialize is not None:
        with torch.no_grad():
            initialize(raw)
    ema = EMA(raw, cfg.ema_halflife_images, cfg.ema_rampup or None)
    optimizer = torch.optim.AdamW(
        raw.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )
    config, note = _resolve_hidden_weight(config, dataset, family)
    loss_fn = build_loss(config.loss, family, net_cfg.sigma_data)
    run_cfg = _run_config_dict(config, net_cfg, family, net_cfg.sigma_data, data_sigma_n(dataset))
    generator = torch.Generator(device=device)

    step, extra = 0, {}
    resume = _resume_path(cfg, ckpt_dir, info)
    if note is not None and info.rank == 0:
        print(note, file=sys.stderr, flush=True)
    if resume is not None:
        step, extra = _restore(resume, raw, ema, optimizer, run_cfg, info)
    images_seen, skipped = int(extra.get("images_seen", step * cfg.batch_size)), int(extra.get("skipped_steps", 0))

    model = eager = wrap_ddp(raw, info)
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
    stop = _StopFlag(cfg.max_minutes)
    stopped = None
    try:
        batches = _epochs(loader, sampler, step, cfg.seed, info.rank)
        while step < total:
            batch = next(batches)
            if model is not eager:  # a compiled model's first batch: its gradients are checked once
                model = eager = _checked_compile(model, eager, loss_fn, batch, family, optimizer, info, cfg)
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
            if device.type == "cpu":
                retune()  # an automatic thread count follows the other processes' load (ambient_science.threads)
                metrics["threads"] = torch.get_num_threads()
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
            stopped = stop.reason(info)
            if stopped is not None and step < total:
                break
            stopped = None
        if info.is_main and saved_at != step:
            last_ckpt = _save(ckpt_dir, raw, ema, optimizer, step, generator, run_cfg, extra, cfg, info)
        elif info.is_main and last_ckpt is None and resume is not None:
            last_ckpt = Path(resume)
    finally:
        stop.restore()
        bar.close()
        if logger is not None:
            logger.close()
    return TrainResult(step, images_seen, skipped, last_ckpt, raw, ema, run_cfg, stopped, stop.signum)


class _StopFlag:
    """Ask the loop to stop: on the first SIGTERM / SIGINT (the handler then gives the signal back to its
    previous handler, so a second one acts as usual) or once ``max_minutes`` of wall clock are spent."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, max_minutes: float):
        self.deadline = time.monotonic() + 60.0 * max_minutes if max_minutes > 0 else None
        self.max_minutes = max_minutes
        self.signum = 0
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in self.SIGNALS:
                previous = signal.signal(sig, self._handle)
                if previous is not None:
                    self._previous[sig] = previous

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def reason(self, info: DistInfo) -> str | None:
        """Why to stop now (the same answer on every rank), or None."""
        if self.signum:
            why = f"received {signal.Signals(self.signum).name}"
        elif self.deadline is not None and time.monotonic() > self.deadline:
            why = f"train.max_minutes = {self.max_minutes:g} spent"
        else:
            why = None
        if info.distributed:
            flag = torch.tensor(0.0 if why else 1.0, device=info.device)
            if all_reduce_min(flag, info).item() == 0.0 and why is None:
                why = "another rank stopped"
        return why

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


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
