"""Seconds per sampler step, side by side with one network forward and one forward + backward.

What it shows: the cost of each sampler step (unconditional Euler / Heun, A-DPS, DAPS, the one-step
estimate) in units of the network call it is built from, on whatever device the tensors live on. The
network is the project's EDM U-Net (:mod:`ambient_science.network`, untrained: timing does not depend
on the weights) called through the ambient prior (``Ã_inf`` of a pixel-mask family).

Run (CPU, the defaults are sized for a laptop-class CPU):

    python benchmarks/bench_sampling.py --size 64 --batch 4 --threads 1
    python benchmarks/bench_sampling.py --device cuda --size 256 --batch 8     # on a GPU

Timings are interleaved: each repeat times one forward, one forward + backward and the sampler run back
to back, and the table reports medians over ``--repeats`` of the per-repeat ratios, so a shared, busy
CPU slows numerator and denominator alike. Per-step times divide a run of ``--steps`` steps by its
number of steps (Heun: ``2N − 1`` network calls for ``N`` steps).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ambient_science.likelihoods import GaussianLikelihood
from ambient_science.network import UNetConfig, build_network
from ambient_science.operators import PixelMaskFamily
from ambient_science.prior import Prior
from ambient_science.samplers import initial_noise, one_step, sample_euler, sample_heun, sigma_like
from ambient_science.samplers_daps import sample_daps
from ambient_science.samplers_dps import sample_adps
from ambient_science.schedules import edm_sigmas


def _sync(device: torch.device) -> None:
    if device.type != "cpu" and hasattr(torch, device.type):
        getattr(torch, device.type).synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one ``fn()`` call [s]."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side (pixels)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=32, help="U-Net model_channels")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed sampler run")
    parser.add_argument("--langevin", type=int, default=30, help="DAPS Langevin steps per level")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default; 1 is steadiest on a shared CPU)"
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    family = PixelMaskFamily((1, args.size, args.size), p=0.5, delta=0.1)
    config = UNetConfig(img_channels=1, cond_channels=1, model_channels=args.channels, channel_mult=(1, 2, 2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network(config).to(device)
    prior = Prior(net, family)
    g = torch.Generator(device="cpu").manual_seed(0)
    B = args.batch
    D = prior.denoiser(B, generator=g, device=device)
    A = family.sample(B, generator=g, device=device)
    y = A(torch.randn(A.ishape, generator=g).to(device))
    lik = GaussianLikelihood(A, y, 0.05)
    x = initial_noise(D.shape, 10.0, generator=g, device=device)
    sig = edm_sigmas(args.steps, sigma_max=10.0)
    n = args.steps

    def forward():
        with torch.no_grad():
            D(x, sigma_like(1.0, x))

    def forward_backward():
        x_in = x.detach().requires_grad_(True)
        D(x_in, sigma_like(1.0, x_in)).square().sum().backward()

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn()

        return run

    rows = [
        ("Euler step (no_grad)", n, no_grad(lambda: sample_euler(D, x, sig))),
        ("Heun step (no_grad)", n, no_grad(lambda: sample_heun(D, x, sig))),
        ("A-DPS step (score, Euler)", n, lambda: sample_adps(D, x, sig, lik)),
        ("A-DPS step (Heun)", n, lambda: sample_adps(D, x, sig, lik, heun=True)),
        (f"DAPS level (ode=1, {args.langevin} Langevin, no_grad)", n,
         no_grad(lambda: sample_daps(D, x, sig, lik, generator=g, langevin_steps=args.langevin))),
        (f"DAPS level (ode=1, {args.langevin} Langevin, grad on)", n,
         lambda: sample_daps(D, x, sig, lik, generator=g, langevin_steps=args.langevin)),
        (f"DAPS level (ode=5, {args.langevin} Langevin, no_grad)", n,
         no_grad(lambda: sample_daps(D, x, sig, lik, generator=g, ode_steps=5, langevin_steps=args.langevin))),
        ("one-step (A-OS)", 1, no_grad(lambda: one_step(D, lik))),
        ("one-step + CG data consistency (20 it)", 1, no_grad(lambda: one_step(D, lik, data_consistency="cg"))),
    ]  # fmt: skip

    params = sum(p.numel() for p in net.parameters())
    print(f"device {device}, torch threads {torch.get_num_threads()}, U-Net {params / 1e6:.2f} M parameters "
          f"(model_channels={args.channels}, mult=(1, 2, 2)), images {B}×1×{args.size}×{args.size}, "
          f"median of {args.repeats} interleaved repeats")  # fmt: skip
    forward(), forward_backward()  # warm-up
    print(f"{'sampler step':50s} {'ms/step':>9s} {'fwd ms':>8s} {'/ fwd':>7s} {'/ fwd+bwd':>10s}")
    fb_over_f = []
    for name, steps, fn in rows:
        fn()  # warm-up
        t_row, r_f, r_fb, t_fwd = [], [], [], []
        for _ in range(args.repeats):
            t_f = timed(forward, device)
            t_fb = timed(forward_backward, device)
            t = timed(fn, device) / steps
            t_row.append(t)
            t_fwd.append(t_f)
            r_f.append(t / t_f)
            r_fb.append(t / t_fb)
            fb_over_f.append(t_fb / t_f)
        med = statistics.median
        print(f"{name:50s} {med(t_row) * 1e3:9.1f} {med(t_fwd) * 1e3:8.1f} {med(r_f):7.2f} {med(r_fb):10.2f}")
    print(f"forward + backward to the input = {statistics.median(fb_over_f):.2f} × forward (median over all repeats)")


if __name__ == "__main__":
    main()
