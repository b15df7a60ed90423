"""Ambient-loss training step vs the plain EDM step on the same U-Net, and training images/s.

What it shows: the ambient machinery (further corruption ``Ã``, ``x̃ = Ãᴴ(B y + σ Ã ε)``, conditioning
channel, ``‖A D − y‖²``) costs little on top of EDM training (target ≤ 1.10× the EDM step). Both steps
are full optimisation steps (forward, backward, AdamW); the networks differ only by the ambient net's
conditioning input channel. Timings alternate (EDM, ambient, ambient, EDM, ...; ``_timing.py``) and the
ratio is the median of per-round ratios, so a busy machine biases neither side. Families: ``pixel`` (masks),
``mri`` (multi-coil Cartesian SENSE, complex images), ``eht`` (EHT 2017 visibilities, PSF conditioning).

Run:
    python benchmarks/bench_train_step.py                       # CPU demo size: 64x64, batch 16, pixel masks
    python benchmarks/bench_train_step.py --family mri --coils 8 --batch 8
    python benchmarks/bench_train_step.py --device cuda --size 320 --batch 8 --channels 128 --bf16
    python benchmarks/bench_train_step.py --full                # + images/s of the whole trainer loop
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from typing import Any

import torch
from _timing import PeakMemory, compare, ensure_thread_env

from ambient_science.family import OperatorFamily
from ambient_science.network import UNetConfig, build_network
from ambient_science.training.losses import AmbientLoss, EDMLoss

__all__ = ["FAMILIES", "make_family", "run"]

FAMILIES = ("pixel", "mri", "eht")


def make_family(kind: str, size: int, coils: int = 8) -> OperatorFamily:
    """The operator family of a benchmark: pixel masks, multi-coil Cartesian MRI, or EHT 2017 coverages."""
    from ambient_science.operators import CartesianMRIFamily, PixelMaskFamily
    from ambient_science.operators.interferometry import InterferometerFamily

    if kind == "pixel":
        return PixelMaskFamily((1, size, size), p=0.5, delta=0.1)
    if kind == "mri":
        return CartesianMRIFamily((1, size, size), acceleration=4, center_fraction=0.08, num_coils=coils)
    if kind == "eht":
        return InterferometerFamily(npix=size, fov_uas=160.0, normalize=True)
    raise ValueError(f"unknown family {kind!r}; expected one of {FAMILIES}")


def _net(img_channels: int, cond: int, channels: int, mult, blocks: int, attn, device):
    cfg = UNetConfig(
        img_channels=img_channels,
        cond_channels=cond,
        model_channels=channels,
        channel_mult=tuple(mult),
        num_blocks=blocks,
        attn_levels=tuple(attn),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_network(cfg).to(device)


class _Scale(torch.nn.Module):
    """``F = w x``: a one-parameter stand-in for the backbone, to time the losses alone. Same call contract and
    the same projections as :class:`~ambient_science.network.EDMDenoiser` (``P x`` and ``P F`` when given ``P``)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, sigma, cond, project=None):
        F_x = self.w * x
        if project is None:
            return F_x
        PF = project(F_x)
        return project(x) + PF + (F_x - PF)


def _step(net: torch.nn.Module, loss_fn, autocast: dict):
    """One optimisation step of ``loss_fn(net)`` (forward, backward, AdamW) as a callable."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step():
        with torch.autocast(**autocast):
            loss = loss_fn(net).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def run(
    *,
    family: str = "pixel",
    size: int = 64,
    batch: int = 16,
    channels: int = 32,
    mult: tuple[int, ...] = (1, 2, 2),
    blocks: int = 1,
    attn: tuple[int, ...] = (2,),
    coils: int = 8,
    repeats: int = 15,
    device: str = "cpu",
    bf16: bool = False,
) -> dict[str, Any]:
    """One EDM step and one ambient step per round, alternated; medians, paired ratio, images/s, peak memory."""
    device = torch.device(device)
    fam = make_family(family, size, coils)
    g = torch.Generator(device=device).manual_seed(0)
    shape = (batch, *fam.image_shape)
    if fam.is_complex:
        x = 0.5 * torch.complex(
            torch.randn(shape, generator=g, device=device), torch.randn(shape, generator=g, device=device)
        )
    else:
        x = 0.5 * torch.randn(shape, generator=g, device=device)
    A = fam.sample(batch, generator=torch.Generator().manual_seed(0), device=device)
    y = A(x)
    img_ch = 2 if fam.is_complex else 1
    edm_net = _net(img_ch, 0, channels, mult, blocks, attn, device)
    amb_net = _net(img_ch, fam.conditioning_channels, channels, mult, blocks, attn, device)
    edm_loss, amb_loss = EDMLoss(), AmbientLoss(fam)
    autocast = {"device_type": device.type, "dtype": torch.bfloat16, "enabled": bf16}

    edm_step = _step(edm_net, lambda net: edm_loss(net, x, generator=g), autocast)
    ambient_step = _step(amb_net, lambda net: amb_loss(net, y, A, generator=g), autocast)

    # the same two steps with a one-parameter "network" (D = w x): what is left is the loss's own work, and the
    # difference is the ambient machinery's cost without the noise of timing a large network twice
    probes = {}
    for name, loss_fn in (
        ("edm_probe", lambda net: edm_loss(net, x, generator=g)),
        ("ambient_probe", lambda net: amb_loss(net, y, A, generator=g)),
    ):
        probes[name] = _step(_Scale().to(device), loss_fn, autocast)
    fns = {"edm": edm_step, "ambient": ambient_step, **probes}
    cmp = compare(fns, repeats=repeats, min_time=0.05, device=device)
    extra = statistics.median(a - e for a, e in zip(cmp.times["ambient_probe"], cmp.times["edm_probe"]))
    peak = {}
    for name, step in (("edm", edm_step), ("ambient", ambient_step)):
        with PeakMemory(device) as mem:
            step()
        peak[name] = mem.mib
    q1, med, q3 = cmp.ratio("ambient", "edm")
    e, a = cmp.median("edm"), cmp.median("ambient")
    return {
        "family": family,
        "case": f"{family}, {size}², batch {batch}" + (f", {coils} coils" if family == "mri" else ""),
        "device": str(device),
        "bf16": bf16,
        "params_M": sum(p.numel() for p in amb_net.parameters()) / 1e6,
        "edm_ms": 1e3 * e,
        "ambient_ms": 1e3 * a,
        "ratio": med,
        "ratio_iqr": [q1, q3],
        "edm_img_s": batch / e,
        "ambient_img_s": batch / a,
        "extra_ms": 1e3 * extra,
        "extra_pct": 100 * extra / e,
        "edm_peak_mib": peak["edm"],
        "ambient_peak_mib": peak["ambient"],
        "peak_method": mem.method,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="pixel", choices=FAMILIES)
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--mult", type=int, nargs="+", default=[1, 2, 2])
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--attn", type=int, nargs="*", default=[2])
    p.add_argument("--coils", type=int, default=8, help="coils of the mri family")
    p.add_argument("--repeats", type=int, default=15, help="alternated rounds")
    p.add_argument("--threads", type=int, default=1, help="torch, OpenMP and BLAS threads")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--full", action="store_true", help="also time the whole trainer loop (data, EMA, logging)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    r = run(
        family=args.family, size=args.size, batch=args.batch, channels=args.channels, mult=tuple(args.mult),
        blocks=args.blocks, attn=tuple(args.attn), coils=args.coils, repeats=args.repeats, device=args.device,
        bf16=args.bf16 and args.device.startswith("cuda"),
    )  # fmt: skip
    print(f"device {r['device']}, threads {torch.get_num_threads()}, U-Net {r['params_M']:.2f} M params, {r['case']}")
    print(f"EDM step      {r['edm_ms']:8.1f} ms   ({r['edm_img_s']:7.1f} images/s, peak {r['edm_peak_mib']:.0f} MiB)")
    print(f"ambient step  {r['ambient_ms']:8.1f} ms   ({r['ambient_img_s']:7.1f} images/s, "
          f"peak {r['ambient_peak_mib']:.0f} MiB)")  # fmt: skip
    print(f"ambient / EDM {r['ratio']:8.3f}x  (IQR {r['ratio_iqr'][0]:.3f}-{r['ratio_iqr'][1]:.3f}; target <= 1.10x)")
    print(f"ambient extra {r['extra_ms']:8.1f} ms   ({r['extra_pct']:.1f} % of the EDM step; the losses alone, "
          "timed with a one-parameter network)")  # fmt: skip
    if args.full:
        full_trainer(args)


def full_trainer(args) -> None:
    """Images/s of :func:`ambient_science.training.trainer.train` on in-memory measurements (from its metrics)."""
    import json

    from ambient_science.datasets.measurements import MeasurementDataset
    from ambient_science.pipelines.training import train
    from ambient_science.training.config import RunConfig, TrainConfig

    family = make_family(args.family, args.size, args.coils)
    n = args.batch * 4
    g = torch.Generator().manual_seed(1)
    A = family.sample(n, generator=g)
    x = 0.5 * torch.randn((n, *family.image_shape), generator=g)
    x = x.to(torch.complex64) if family.is_complex else x
    data = MeasurementDataset(A(x), A.params(), family)
    steps = args.repeats
    with tempfile.TemporaryDirectory() as out:
        cfg = RunConfig(
            network={"model_channels": args.channels, "channel_mult": args.mult, "num_blocks": args.blocks,
                     "attn_levels": args.attn},
            train=TrainConfig(out_dir=out, steps=steps, batch_size=args.batch, log_every=max(1, steps // 2),
                              device=str(args.device), progress=False, checkpoint_every=0, bf16=args.bf16),
        )  # fmt: skip
        train(cfg, data)
        with open(f"{out}/metrics.jsonl") as f:
            last = json.loads(f.read().splitlines()[-1])
    print(f"trainer loop  {last['sec_per_step'] * 1e3:8.1f} ms   ({last['images_per_s']:7.1f} images/s, "
          "second half of the run: data loading, EMA and the non-finite guard included)")  # fmt: skip


if __name__ == "__main__":
    ensure_thread_env()
    main()
