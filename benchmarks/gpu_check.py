"""The GPU path, checked in one command: the ``gpu`` preset's training, sampling, operator and DDP steps.

What it measures (issue #20), on SYNTHETIC 320 × 320 multi-coil knee slices in fastMRI's layout (15 coils,
written, prepared and ESPIRiT-calibrated here: no downloads) and the preset's U-Net
(:mod:`ambient_science.pipelines.gpu_preset`, 29.0 M parameters):

* ``data``: synthetic volume -> ``prepare_fastmri`` (R = 4, ESPIRiT on the device) -> measurements in memory;
* ``train_step``: images/s of the trainer's own step (:func:`~ambient_science.training.trainer.train_step`: loss,
  backward, gradient clipping, non-finite guard, AdamW) for the ambient loss and for plain EDM on the fully
  sampled images, bf16 autocast and fp32, channels-last weights; timed in alternated rounds (benchmarks/_timing.py),
  ratio = median of per-round ratios; peak memory of one step; ``--compile`` adds ``torch.compile`` rows;
* ``bf16_agreement``: two 50-step trainings from the same seed and the same draws, bf16 and fp32 (dropout off, so
  the two runs differ only by precision): per-step relative loss difference;
* ``adps``: A-DPS wall time (``reconstruct(method="dps")``, the example's 100 steps, ``Ã_inf`` = full, CG data
  consistency) of a batch of slices, per slice and per volume (35 slices, the preset's 8 samples), fp32 as the
  example runs it and under bf16 autocast;
* ``sense``: the multi-coil SENSE operator's forward + adjoint on the device vs the same on the CPU;
* ``ddp``: one 2-process DDP step through ``torchrun`` (NCCL with 2 GPUs, else gloo: over one GPU, or CPU) and
  its gradient against the single-process mean of the two ranks' gradients.

A part that fails records its error text in the JSON and the run goes on; a time budget (``--max-seconds``)
skips what is left. Targets (data-centre GPU): ambient step ≥ 100 images/s at 320² in bf16, ambient/EDM ≤ 1.10,
A-DPS ≤ 30 s per 320² multi-coil slice.

Run::

    python benchmarks/gpu_check.py --device cuda --out runs/gpu_check          # one GPU, under 8 minutes
    python benchmarks/gpu_check.py --device cpu --tiny --out runs/gpu_check_cpu  # the code path, in seconds

Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import PeakMemory, compare, machine_info, sync, timed

from ambient_science.pipelines.gpu_preset import GPU_DATA, GPU_NETWORK, GPU_SAMPLING, GPU_TRAIN

TARGETS = {"ambient_img_s": 100.0, "ratio": 1.10, "adps_s_per_slice": 30.0}


@dataclass(frozen=True)
class Sizes:
    """Every size of one check: the preset's (``FULL``) or a tiny CPU one (``TINY``)."""

    recon: int
    coils: int
    slices: int
    network: dict[str, Any]
    batch: int  # per-device training batch of the timed steps
    repeats: int  # alternated timing rounds
    warmup: int
    agree_steps: int
    agree_batch: int
    agree_lr: float
    dps_steps: int
    dps_batch: int
    sense_batch: int
    ddp_batch: int  # global: half per rank
    virtual_coils: int | None = None
    dps_samples: int = GPU_SAMPLING["dps_samples"]
    slices_per_volume: int = GPU_DATA["slices_per_volume"]
    ddp_timeout: int = 300
    extra: dict[str, Any] = field(default_factory=dict)


FULL = Sizes(
    recon=GPU_DATA["recon_size"][0], coils=GPU_DATA["num_coils"], slices=4, network=GPU_NETWORK, batch=8, repeats=10,
    warmup=3, agree_steps=50, agree_batch=4, agree_lr=GPU_TRAIN["lr"], dps_steps=GPU_SAMPLING["dps_steps"],
    dps_batch=4, sense_batch=8, ddp_batch=4,
)  # fmt: skip
TINY = Sizes(
    recon=32, coils=4, slices=2, batch=2, repeats=3, warmup=1, agree_steps=10, agree_batch=2, agree_lr=1e-3,
    dps_steps=6, dps_batch=2, sense_batch=2, ddp_batch=4, ddp_timeout=180,
    network={"kind": "unet", "model_channels": 8, "channel_mult": [1, 2, 2], "num_blocks": 1, "attn_levels": [2],
             "mid_attention": True, "dropout": 0.1, "sigma_data": 0.5},
)  # fmt: skip


# -- helpers ------------------------------------------------------------------------------------------------
def _net_cfg(sizes: Sizes, cond_channels: int):
    from ambient_science.network import network_config_from_dict

    return network_config_from_dict({**sizes.network, "img_channels": 2, "cond_channels": cond_channels})


def _init(net_cfg, device: torch.device, seed: int = 0):
    """The trainer's initial network (same seed -> same weights), channels-last as the preset."""
    from ambient_science.training.config import TrainConfig
    from ambient_science.training.trainer import _init_network

    return _init_network(net_cfg, TrainConfig(seed=seed, channels_last=GPU_TRAIN["channels_last"]), device)


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _batch(data, indices: list[int], device: torch.device) -> dict[str, Any]:
    from torch.utils.data import default_collate

    b = default_collate([data[i % len(data)] for i in indices])
    return {
        "y": b["y"].to(device),
        "params": {k: v.to(device) for k, v in b["params"].items()},
        "sigma_n": b["sigma_n"].to(device, torch.float32),
    }


def _clean_batch(images: torch.Tensor, indices: list[int], family, device: torch.device) -> dict[str, Any]:
    """Fully sampled (coil-combined) images as a batch of the clean family (``A = I``, no noise)."""
    x = torch.stack([images[i % len(images)] for i in indices]).to(device)
    params = family.sample(len(indices), generator=torch.Generator().manual_seed(0), device=device).params()
    return {"y": x, "params": params, "sigma_n": torch.zeros(len(indices), device=device)}


class _EDM:
    """Plain EDM on clean images in the trainer's ``loss_fn(net, y, A, generator)`` form (``A = I`` is unused)."""

    def __init__(self, sigma_data: float):
        from ambient_science.training.losses import EDMLoss

        self.loss = EDMLoss(sigma_data=sigma_data)

    def __call__(self, net, y, A, *, generator):
        return self.loss(net, y, generator=generator)


class _Bf16(torch.nn.Module):
    """The network under bf16 autocast (as the trainer calls it), float32 out: for A-DPS in bf16."""

    def __init__(self, net: torch.nn.Module, device: torch.device):
        super().__init__()
        self.net, self.device_type = net, device.type

    def forward(self, x, sigma, cond, project=None):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.net(x, sigma, cond, project=project).float()


# -- parts --------------------------------------------------------------------------------------------------
def part_data(ctx: dict[str, Any]) -> dict[str, Any]:
    """A synthetic multi-coil volume in fastMRI's layout -> prepared R = 4 measurements (ESPIRiT on the device)."""
    from ambient_science.datasets.fastmri import write_fastmri_volume
    from ambient_science.datasets.measurements import MeasurementFile
    from ambient_science.datasets.prepare import load_targets, prepare_fastmri
    from ambient_science.datasets.synthetic_knee import fastmri_multicoil_knee_volume

    s, device, work = ctx["sizes"], ctx["device"], ctx["work"]
    t0 = time.perf_counter()
    vol = fastmri_multicoil_knee_volume(
        0, recon_size=(s.recon, s.recon), num_slices=s.slices, num_coils=s.coils, virtual_coils=s.virtual_coils
    )
    raw = write_fastmri_volume(
        work / "synthetic_knee_00000.h5", vol["kspace"], recon_size=(s.recon, s.recon), target=vol["target"],
        header=vol["header"], patient_id="synthetic-knee-0", attrs={**vol["attrs"], "seed": 0}, overwrite=True,
    )  # fmt: skip
    t1 = time.perf_counter()

    def prepare(espirit_device):
        return prepare_fastmri(
            raw, work / "knee_r4.h5", acceleration=GPU_DATA["acceleration"],
            center_fraction=GPU_DATA["center_fraction"], drop_fraction=GPU_DATA["drop_fraction"],
            targets_output=work / "knee_r4_targets.h5", overwrite=True, device=espirit_device,
        )  # fmt: skip

    fallback = None
    try:
        out = prepare(device)
    except Exception:  # ESPIRiT on the device failed: the other parts still need data, so calibrate on the CPU
        if device.type == "cpu":
            raise
        fallback = traceback.format_exc(limit=4)
        out = prepare(None)
    t2 = time.perf_counter()
    data = MeasurementFile(out)
    records = [data[i] for i in range(len(data))]  # in memory: the timed steps read no file
    ctx.update(data=records, family=data.family, clean=load_targets(work / "knee_r4_targets.h5")["image"])
    return {
        "raw_kspace_shape": list(vol["kspace"].shape),
        "target_shape": list(vol["target"].shape),
        "grid": list(data.family.image_shape),
        "coils": data.family.num_coils,
        "slices": len(records),
        "generate_s": round(t1 - t0, 2),
        "prepare_s": round(t2 - t1, 2),
        "espirit_device": str(device) if fallback is None else "cpu (fallback)",
        **({"espirit_device_error": fallback} if fallback else {}),
    }


def _needs_data(ctx):
    if "data" not in ctx:
        raise RuntimeError("no data: the 'data' part did not run or failed")


def part_train_step(ctx: dict[str, Any]) -> dict[str, Any]:
    """Images/s of the trainer's step, ambient vs EDM, bf16 and fp32, alternated rounds; peak memory."""
    from ambient_science.operators import CleanFamily
    from ambient_science.training.distributed import DistInfo
    from ambient_science.training.losses import LossConfig, build_loss
    from ambient_science.training.trainer import compiled_gradient_error, train_step

    _needs_data(ctx)
    s, device, family = ctx["sizes"], ctx["device"], ctx["family"]
    info = DistInfo(device=device)
    idx = list(range(s.batch))
    clean_family = CleanFamily(family.image_shape, is_complex=True)
    amb_batch, edm_batch = _batch(ctx["data"], idx, device), _clean_batch(ctx["clean"], idx, clean_family, device)
    amb_cfg, edm_cfg = _net_cfg(s, family.conditioning_channels), _net_cfg(s, 0)
    nets = {"ambient": _init(amb_cfg, device), "edm": _init(edm_cfg, device)}
    losses = {
        "ambient": build_loss(LossConfig(kind="auto"), family, amb_cfg.sigma_data),
        "edm": _EDM(edm_cfg.sigma_data),
    }
    setup = {"ambient": (family, amb_batch), "edm": (clean_family, edm_batch)}
    precisions = ("bf16", "fp32") if device.type == "cuda" else ("fp32",)

    def make_step(kind: str, model, bf16: bool):
        opt = torch.optim.AdamW(nets[kind].parameters(), lr=GPU_TRAIN["lr"])
        g = torch.Generator(device=device).manual_seed(0)
        fam, batch = setup[kind]

        def step():
            train_step(model, losses[kind], batch, family=fam, optimizer=opt, generator=g, info=info, grad_clip=1.0,
                       bf16=bf16)  # fmt: skip

        return step

    fns = {f"{k}_{p}": make_step(k, nets[k], p == "bf16") for p in precisions for k in ("ambient", "edm")}
    compile_s, compile_grad_error = {}, {}
    if ctx["compile"]:
        for k in ("ambient", "edm"):
            compiled = torch.compile(nets[k])
            fn = make_step(k, compiled, device.type == "cuda")
            t0 = time.perf_counter()
            fn()
            sync(device)
            compile_s[k] = round(time.perf_counter() - t0, 1)
            fns[f"{k}_{precisions[0]}_compiled"] = fn
            # the trainer's own check: it trains without compile when this exceeds COMPILE_GRAD_TOL
            opt = torch.optim.SGD(nets[k].parameters(), lr=0.0)
            err = compiled_gradient_error(compiled, nets[k], losses[k], setup[k][1], setup[k][0], opt, info,
                                          bf16=device.type == "cuda")  # fmt: skip
            compile_grad_error[k] = float(f"{err:.3g}")
    cmp = compare(fns, repeats=s.repeats, warmup=s.warmup, min_time=0.0, device=device)
    rows = []
    for name, fn in fns.items():
        with PeakMemory(device) as mem:
            fn()
        kind, precision = name.split("_", 2)[:2]
        sec = cmp.median(name)
        row = {"step": name, "loss": kind, "precision": precision, "compiled": name.endswith("compiled"),
               "ms": round(1e3 * sec, 2), "img_s": round(s.batch / sec, 2), "peak_mib": round(mem.mib, 1)}  # fmt: skip
        if name.startswith("ambient"):
            q1, med, q3 = cmp.ratio(name, name.replace("ambient", "edm", 1))
            row.update(ratio=round(med, 3), ratio_iqr=[round(q1, 3), round(q3, 3)])
        rows.append(row)
    return {
        "batch": s.batch,
        "image": f"{s.recon} x {s.recon}, {family.num_coils} coils",
        "params": {"ambient": _params(nets["ambient"]), "edm": _params(nets["edm"])},
        "channels_last": GPU_TRAIN["channels_last"],
        "bf16_active": device.type == "cuda",
        "rounds": s.repeats,
        "compile_s": compile_s,
        **({"compile_grad_error": compile_grad_error} if compile_grad_error else {}),
        "peak_method": mem.method,
        "rows": rows,
    }


def _train_losses(ctx, bf16: bool) -> tuple[list[float], torch.nn.Module]:
    from ambient_science.training.distributed import DistInfo
    from ambient_science.training.losses import LossConfig, build_loss
    from ambient_science.training.trainer import step_seed, train_step

    s, device, family = ctx["sizes"], ctx["device"], ctx["family"]
    cfg = _net_cfg(s, family.conditioning_channels)
    net = _init(cfg, device).eval()  # eval: no dropout, so the runs differ only by precision
    loss_fn = build_loss(LossConfig(kind="auto"), family, cfg.sigma_data)
    opt = torch.optim.AdamW(net.parameters(), lr=s.agree_lr)
    g = torch.Generator(device=device)
    out = []
    for step in range(s.agree_steps):
        batch = _batch(ctx["data"], [step * s.agree_batch + i for i in range(s.agree_batch)], device)
        g.manual_seed(step_seed(0, 0, step))
        loss, _, ok = train_step(net, loss_fn, batch, family=family, optimizer=opt, generator=g,
                                 info=DistInfo(device=device), grad_clip=1.0, bf16=bf16)  # fmt: skip
        out.append(float(loss) if ok else float("nan"))
    return out, net


def part_bf16_agreement(ctx: dict[str, Any]) -> dict[str, Any]:
    """Per-step losses of two trainings from the same seed and draws, bf16 vs fp32."""
    _needs_data(ctx)
    s = ctx["sizes"]
    t0 = time.perf_counter()
    bf, _ = _train_losses(ctx, True)
    fp, net = _train_losses(ctx, False)
    ctx["trained"] = net
    rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(bf, fp)]
    tail = max(1, s.agree_steps // 5)
    return {
        "steps": s.agree_steps,
        "batch": s.agree_batch,
        "lr": s.agree_lr,
        "dropout": "off (eval mode): the two runs differ only by precision",
        "bf16_active": ctx["device"].type == "cuda",
        "median_rel_diff": statistics.median(rel),
        "max_rel_diff": max(rel),
        "mean_loss_last": {"bf16": statistics.fmean(bf[-tail:]), "fp32": statistics.fmean(fp[-tail:]), "steps": tail},
        "first_loss": {"bf16": bf[0], "fp32": fp[0]},
        "losses_bf16": [round(v, 6) for v in bf],
        "losses_fp32": [round(v, 6) for v in fp],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def part_adps(ctx: dict[str, Any]) -> dict[str, Any]:
    """A-DPS wall time of a batch of slices: the example's steps, one sample; per slice and per volume."""
    from ambient_science.sampling.likelihoods import GaussianLikelihood
    from ambient_science.sampling.prior import Prior
    from ambient_science.sampling.reconstruction import reconstruct

    _needs_data(ctx)
    s, device, family = ctx["sizes"], ctx["device"], ctx["family"]
    net = ctx.get("trained") or _init(_net_cfg(s, family.conditioning_channels), device)
    b = _batch(ctx["data"], list(range(s.dps_batch)), device)
    A = family.make(b["params"])
    lik = GaussianLikelihood(A, b["y"], b["sigma_n"].clamp_min(1e-4).reshape(-1, 1, 1, 1))
    nets = {"fp32": net}
    if device.type == "cuda":
        nets["bf16"] = _Bf16(net, device)
    rows = []
    for precision, module in nets.items():
        prior = Prior(module, family)

        def run(steps: int, prior=prior):
            g = torch.Generator().manual_seed(0)
            return reconstruct(prior, lik, method="dps", generator=g, num_samples=1, steps=steps,
                               inference_operator=GPU_SAMPLING["inference_operator"],
                               data_consistency=GPU_SAMPLING["data_consistency"], progress=False)  # fmt: skip

        run(2)  # warm-up (kernels, cuDNN plans)
        with PeakMemory(device) as mem:
            sec = timed(lambda: run(s.dps_steps), device)
        per_slice = sec / s.dps_batch
        rows.append({
            "precision": precision, "seconds_batch": round(sec, 2), "s_per_slice": round(per_slice, 3),
            "s_per_slice_all_samples": round(per_slice * s.dps_samples, 2),
            "s_per_volume": round(per_slice * s.dps_samples * s.slices_per_volume, 1),
            "ms_per_step": round(1e3 * sec / s.dps_steps, 2), "peak_mib": round(mem.mib, 1),
        })  # fmt: skip
    return {
        "steps": s.dps_steps,
        "batch": s.dps_batch,
        "samples_per_slice": s.dps_samples,
        "slices_per_volume": s.slices_per_volume,
        "inference_operator": GPU_SAMPLING["inference_operator"],
        "note": "s_per_slice: one posterior sample of a slice (batch time / batch); s_per_slice_all_samples: the "
        "example's samples per slice; s_per_volume: that times slices_per_volume (extrapolated, not timed)",
        "rows": rows,
    }


def part_sense(ctx: dict[str, Any]) -> dict[str, Any]:
    """Forward + adjoint of the multi-coil SENSE operator on the device and on the CPU (same operator)."""
    _needs_data(ctx)
    s, device, family = ctx["sizes"], ctx["device"], ctx["family"]
    cpu = torch.device("cpu")
    out = {}
    results = {}
    for name, dev in (("cpu", cpu), ("device", device)):
        b = _batch(ctx["data"], list(range(s.sense_batch)), dev)
        A = family.make(b["params"])
        x = A.H(b["y"])
        fn = lambda A=A, x=x: A.H(A(x))  # noqa: E731
        cmp = compare({name: fn}, repeats=max(3, s.repeats), warmup=2, min_time=0.05, device=dev)
        out[f"{name}_ms"] = round(1e3 * cmp.median(name), 3)
        results[name] = fn().cpu()
    ref = results["cpu"]
    out.update(
        batch=s.sense_batch,
        coils=family.num_coils,
        image=f"{s.recon} x {s.recon}",
        cpu_threads=torch.get_num_threads(),
        speedup=round(out["cpu_ms"] / out["device_ms"], 2),
        rel_diff=float((results["device"] - ref).abs().max() / ref.abs().max()),
    )
    return out


# -- DDP ------------------------------------------------------------------------------------------------------
def _ddp_plan(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda" and torch.cuda.device_count() >= 2:
        return {"backend": "nccl", "device": "cuda", "devices": ["cuda:0", "cuda:1"]}
    if device.type == "cuda":
        index = device.index or 0
        return {"backend": "gloo", "device": f"cuda:{index}", "devices": [f"cuda:{index}"] * 2}
    return {"backend": "gloo", "device": "cpu", "devices": ["cpu", "cpu"]}


def _perturbed(net: torch.nn.Module) -> torch.nn.Module:
    """Every parameter nudged (the zero-initialised output layers too), so that every gradient is non-zero."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1e-2 * torch.randn(p.shape, generator=g).to(p.device))
    return net


def _rank_grads(net, loss_fn, batch, family, device, rank: int, model=None, info=None):
    from ambient_science.training.distributed import DistInfo
    from ambient_science.training.trainer import step_seed, train_step

    g = torch.Generator(device=device).manual_seed(step_seed(0, rank, 0))
    opt = torch.optim.AdamW(net.parameters())
    loss, _, ok = train_step(model or net, loss_fn, batch, family=family, optimizer=opt, generator=g,
                             info=info or DistInfo(device=device), update=False)  # fmt: skip
    if not ok:
        raise FloatingPointError("non-finite loss or gradient in the DDP check")
    return float(loss), {n: p.grad.detach().clone() for n, p in net.named_parameters()}


def _split(batch: dict[str, Any], rank: int, half: int, device) -> dict[str, Any]:
    sl = slice(rank * half, (rank + 1) * half)
    return {
        "y": batch["y"][sl].to(device),
        "params": {k: v[sl].to(device) for k, v in batch["params"].items()},
        "sigma_n": batch["sigma_n"][sl].to(device),
    }


@contextlib.contextmanager
def _exact_fp32():
    """No TF32 and deterministic cuDNN inside: the DDP check compares gradients of two processes, and TF32
    convolutions with per-process autotuned algorithms differ by ~1e-3 relative (seen on an H200), which is not
    what it tests."""
    b = torch.backends
    saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark)
    b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark = False, False, True, False
    try:
        yield
    finally:
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark = saved


def ddp_worker(work: Path) -> None:
    """One ``torchrun`` rank of the DDP check (``--ddp-worker DIR``): one step, rank 0 saves the gradients."""
    import torch.distributed as dist

    import ambient_science.operators  # noqa: F401  (registers the operator families)
    from ambient_science.registry import family_from_config
    from ambient_science.training.distributed import init_distributed, shutdown_distributed, wrap_ddp
    from ambient_science.training.losses import LossConfig, build_loss

    spec = json.loads((work / "spec.json").read_text())
    with _exact_fp32():
        if spec["backend"] == "gloo" and spec["device"].startswith("cuda"):
            dist.init_process_group("gloo")  # two ranks on one GPU: NCCL refuses that, gloo does not
        info = init_distributed(spec["device"])
        try:
            family = family_from_config(spec["family"])
            cfg = _net_cfg(Sizes(**spec["sizes"]), family.conditioning_channels)
            net = _init(cfg, info.device)
            net.load_state_dict(torch.load(work / "init.pt", map_location=info.device, weights_only=True))
            net.eval()
            batch = torch.load(work / "batch.pt", weights_only=True)
            mine = _split(batch, info.rank, spec["half"], info.device)
            model = wrap_ddp(net, info)
            loss_fn = build_loss(LossConfig(kind="auto"), family, cfg.sigma_data)
            loss, grads = _rank_grads(net, loss_fn, mine, family, info.device, info.rank, model=model, info=info)
            times = [timed(lambda: _rank_grads(net, loss_fn, mine, family, info.device, info.rank, model, info),
                           info.device) for _ in range(3)]  # fmt: skip
            if info.rank == 0:
                torch.save({n: g.cpu() for n, g in grads.items()}, work / "grads.pt")
                (work / "result.json").write_text(json.dumps({
                    "world_size": info.world_size, "backend": dist.get_backend(), "device": str(info.device),
                    "loss_rank0": loss, "step_ms": round(1e3 * statistics.median(times), 2),
                }))  # fmt: skip
            dist.barrier()  # every rank done before the group ends (a gloo rank torn down early aborts at exit)
        finally:
            shutdown_distributed(info)
            if dist.is_initialized():
                dist.destroy_process_group()


def _run_group(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``cmd`` in its own process group; on timeout kill the whole group (torchrun and its ranks)."""
    import signal

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        return -9, f"torchrun killed after {timeout:.0f} s (time budget)\n{stderr}"
    return proc.returncode, stderr


def part_ddp(ctx: dict[str, Any]) -> dict[str, Any]:
    """One DDP step of two ``torchrun`` ranks vs the mean of the two ranks' single-process gradients."""
    from ambient_science.training.losses import LossConfig, build_loss

    _needs_data(ctx)
    s, device, family = ctx["sizes"], ctx["device"], ctx["family"]
    plan = _ddp_plan(device)
    work = ctx["work"] / "ddp"
    work.mkdir(parents=True, exist_ok=True)
    cfg = _net_cfg(s, family.conditioning_channels)
    net = _perturbed(_init(cfg, device)).eval()
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, work / "init.pt")
    batch = _batch(ctx["data"], list(range(s.ddp_batch)), torch.device("cpu"))
    torch.save(batch, work / "batch.pt")
    half = s.ddp_batch // 2
    spec = {**plan, "family": family.config(), "sizes": asdict(s), "half": half}
    (work / "spec.json").write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           str(Path(__file__).resolve()), "--ddp-worker", str(work)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    timeout = max(30.0, min(s.ddp_timeout, ctx["deadline"] + 60.0 - time.perf_counter()))
    t0 = time.perf_counter()
    returncode, stderr = _run_group(cmd, env, timeout)
    wall = time.perf_counter() - t0
    if returncode != 0:
        ranks = "\n".join(line for line in stderr.splitlines() if line.startswith("[rank"))
        raise RuntimeError(f"torchrun exited with {returncode}:\n{(ranks or stderr)[-3000:]}")
    ddp = torch.load(work / "grads.pt", weights_only=True)
    loss_fn = build_loss(LossConfig(kind="auto"), family, cfg.sigma_data)
    ref = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    with _exact_fp32():
        for rank in (0, 1):
            _, grads = _rank_grads(net, loss_fn, _split(batch, rank, half, device), family, device, rank)
            for n in ref:
                ref[n] += grads[n] / 2
    scale = max(float(g.abs().max()) for g in ref.values())
    worst = max(float((ddp[n].to(device) - ref[n]).abs().max()) / max(float(ref[n].abs().max()), 1e-30) for n in ref)
    total = max(float((ddp[n].to(device) - ref[n]).abs().max()) for n in ref) / scale
    result = json.loads((work / "result.json").read_text())
    return {
        **plan,
        **result,
        "global_batch": s.ddp_batch,
        "grad_rel_diff_global": total,
        "grad_rel_diff_worst_tensor": worst,
        "agree": worst < 1e-3,
        "torchrun_wall_s": round(wall, 1),
    }


PARTS = {
    "data": part_data,
    "train_step": part_train_step,
    "bf16_agreement": part_bf16_agreement,
    "adps": part_adps,
    "sense": part_sense,
    "ddp": part_ddp,
}


# -- report -----------------------------------------------------------------------------------------------------
def targets(parts: dict[str, Any], on_gpu: bool) -> list[dict[str, Any]]:
    """The issue's targets, ``met`` = None where the part did not run or the device is not a GPU."""
    out = []

    def add(name, value, op, threshold):
        met = None if value is None or not on_gpu else (value >= threshold if op == ">=" else value <= threshold)
        out.append({"name": name, "value": value, "op": op, "threshold": threshold, "met": met})

    rows = {r["step"]: r for r in parts.get("train_step", {}).get("rows", [])}
    best = rows.get("ambient_bf16") or {}
    add("ambient step images/s, bf16", best.get("img_s"), ">=", TARGETS["ambient_img_s"])
    add("ambient / EDM step time, bf16", best.get("ratio"), "<=", TARGETS["ratio"])
    adps = {r["precision"]: r for r in parts.get("adps", {}).get("rows", [])}
    add("A-DPS s per multi-coil slice, fp32 as the example", (adps.get("fp32") or {}).get("s_per_slice"), "<=",
        TARGETS["adps_s_per_slice"])  # fmt: skip
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4g}"
    return "—" if v is None else str(v)


def markdown(result: dict[str, Any]) -> str:
    meta, parts = result["meta"], result["parts"]
    lines = [f"# GPU check: {meta['device_name']}", ""]
    if not meta["on_gpu"]:
        lines += ["**Not a GPU run**: the numbers below exercise the code path only; no GPU speed is claimed.", ""]
    cost = meta.get("network_cost", {}).get("ambient", {})
    flops = f", {cost['gflop_forward_per_image']} GFLOP forward per {cost['image']} image" if cost else ""
    tiny = "; tiny sizes" if meta["tiny"] else ""
    lines += [f"Command: `{meta['command']}`; {meta['seconds']:.0f} s; torch {meta['torch']}{tiny}. "
              f"U-Net: {meta['params']:,} parameters{flops}.", ""]  # fmt: skip
    lines += ["| target | value | required | met |", "|---|---|---|---|"]
    for t in result["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['name']} | {_fmt(t['value'])} | {t['op']} {t['threshold']} | {met} |")
    lines += ["", "The targets hold for 320 × 320 multi-coil slices on a data-centre GPU (issue #20); `n/a`: not a GPU "
              "run, or the part did not run."]  # fmt: skip
    for name, part in parts.items():
        lines += ["", f"## {name}", ""]
        if "error" in part or "skipped" in part:
            text = part.get("error") or part.get("skipped")
            lines += [f"Failed after {part.get('seconds', 0)} s:" if "error" in part else "Skipped:", "", "```",
                      text.strip()[-1500:], "```"]  # fmt: skip
            continue
        rows = part.get("rows")
        scalars = {k: v for k, v in part.items() if k not in ("rows", "losses_bf16", "losses_fp32")}
        lines += [", ".join(f"{k} = {_fmt(v)}" for k, v in scalars.items()), ""]
        if rows:
            keys = list(rows[0])
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def describe(sizes: Sizes) -> dict[str, Any]:
    """Parameters and forward GFLOP per image of the check's U-Nets (ambient: + mask channel; EDM: none), counted
    by ``torch.utils.flop_counter`` on the meta device (no memory, no device)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ambient_science.network import build_network

    out = {}
    for name, cond in (("ambient", 1), ("edm", 0)):
        with torch.device("meta"):
            net = build_network(_net_cfg(sizes, cond))
            x, sigma = torch.empty(1, 2, sizes.recon, sizes.recon), torch.ones(1)
            with FlopCounterMode(display=False) as counter:
                net(x, sigma, torch.empty(1, cond, sizes.recon, sizes.recon))
        gflop = counter.get_total_flops() / 1e9
        out[name] = {"params": _params(net), "gflop_forward_per_image": float(f"{gflop:.4g}"),
                     "image": f"{sizes.recon} x {sizes.recon}"}  # fmt: skip
    return out


def run(device: str, out: Path, *, tiny: bool, compile: bool, parts: list[str], max_seconds: float) -> dict:
    from ambient_science.training.distributed import resolve_device

    start, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    dev = resolve_device(device)
    sizes = TINY if tiny else FULL
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        ctx: dict[str, Any] = {
            "sizes": sizes, "device": dev, "work": Path(tmp), "compile": compile, "deadline": start + max_seconds,
        }  # fmt: skip
        results: dict[str, Any] = {}
        for name in parts:
            elapsed = time.perf_counter() - start
            if elapsed > max_seconds:
                results[name] = {"skipped": f"time budget: {elapsed:.0f} s > --max-seconds {max_seconds:.0f}"}
                continue
            t0 = time.perf_counter()
            print(f"[gpu_check] {name} ...", flush=True)
            try:
                results[name] = {**PARTS[name](ctx), "seconds": round(time.perf_counter() - t0, 1)}
            except Exception:  # one failing part never ends the run: its error goes into the report
                results[name] = {"error": traceback.format_exc(limit=6), "seconds": round(time.perf_counter() - t0, 1)}
                print(results[name]["error"], file=sys.stderr, flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            print(f"[gpu_check] {name}: {'FAILED' if 'error' in results[name] else 'ok'} "
                  f"({results[name]['seconds']} s)", flush=True)  # fmt: skip
    on_gpu = dev.type == "cuda"
    network = describe(sizes)
    result = {
        "meta": {
            "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if on_gpu else f"CPU ({machine_info()['cpu']})",
            "on_gpu": on_gpu,
            "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "tiny": tiny,
            "compile": compile,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "network": copy.deepcopy(sizes.network),
            "params": network["ambient"]["params"],
            "network_cost": network,
            "sizes": {k: v for k, v in asdict(sizes).items() if k != "network"},
            "started": started,
            "seconds": round(time.perf_counter() - start, 1),
            "machine": machine_info(),
        },
        "parts": results,
    }
    result["targets"] = targets(results, on_gpu)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "gpu_check.md").write_text(markdown(result))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (CUDA when present; the default)")
    p.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    p.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU test)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd training steps")
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    p.add_argument("--max-seconds", type=float, default=450.0, help="skip the parts left after this long")
    p.add_argument("--describe", action="store_true", help="print the U-Nets' parameters and GFLOP, run nothing")
    p.add_argument("--ddp-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.describe:
        print(json.dumps(describe(TINY if args.tiny else FULL), indent=2))
        return 0
    if args.ddp_worker is not None:
        ddp_worker(args.ddp_worker)
        return 0
    parts = args.parts if "data" in args.parts else ["data", *args.parts]
    result = run(args.device, args.out, tiny=args.tiny, compile=args.compile, parts=parts, max_seconds=args.max_seconds)
    print((args.out / "gpu_check.md").read_text())
    failed = [n for n, r in result["parts"].items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
