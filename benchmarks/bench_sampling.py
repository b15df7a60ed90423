"""Seconds per sampler step, side by side with one network forward and one forward + backward.

What it shows: the cost of each sampler step (unconditional Euler / Heun, A-DPS, DAPS, the one-step
estimate) in units of the network call it is built from, on whatever device the tensors live on, and the
peak memory of a sampler run. The network is the project's EDM U-Net (:mod:`ambient_science.network`,
untrained: timing does not depend on the weights) called through the ambient prior (``Ã_inf`` of the
family: pixel masks, multi-coil Cartesian MRI or EHT visibilities), with a Gaussian likelihood.

Run (CPU, the defaults are sized for a laptop-class CPU):

    python benchmarks/bench_sampling.py --size 64 --batch 4 --threads 1
    python benchmarks/bench_sampling.py --family mri --coils 8
    python benchmarks/bench_sampling.py --device cuda --size 256 --batch 8     # on a GPU
    python benchmarks/bench_sampling.py --closure 2      # the black-hole example's DAPS / A-DPS, 2 observations
    python benchmarks/bench_sampling.py --mri runs/mri_knee/data/test_r4_64.h5   # the MRI example's A-DPS variants
    python benchmarks/bench_sampling.py --closure-variants 0 1   # the black-hole DAPS: settings vs time and quality

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
from typing import Any

import torch
from _timing import PeakMemory, ensure_thread_env, quartiles, timed
from bench_train_step import FAMILIES, make_family
from learning_curves import background_hf

from ambient_science.network import UNetConfig, build_network
from ambient_science.sampling.daps import sample_daps
from ambient_science.sampling.dps import sample_adps
from ambient_science.sampling.likelihoods import GaussianLikelihood
from ambient_science.sampling.prior import Prior
from ambient_science.sampling.samplers import initial_noise, one_step, sample_euler, sample_heun, sigma_like
from ambient_science.schedules import SIGMA_MIN, edm_sigmas

__all__ = [
    "ROW_SETS",
    "adps_seconds_per_slice",
    "closure_reconstruction",
    "closure_variants",
    "mri_reconstruction",
    "run",
]

#: which sampler rows a run times: "all" (the CLI default) or the A-DPS / DAPS rows of the report
ROW_SETS = ("all", "report")


def _setup(family: str, size: int, batch: int, channels: int, coils: int, mult, attn, device, seed: int = 0):
    """Prior (untrained U-Net through ``Ã_inf``), its denoiser, a likelihood and a start ``x`` at σ = 10."""
    fam = make_family(family, size, coils)
    config = UNetConfig(
        img_channels=2 if fam.is_complex else 1,
        cond_channels=fam.conditioning_channels,
        model_channels=channels,
        channel_mult=tuple(mult),
        attn_levels=tuple(attn),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(config).to(device)
    prior = Prior(net, fam)
    g = torch.Generator(device="cpu").manual_seed(seed)
    D = prior.denoiser(batch, generator=g, device=device)
    A = fam.sample(batch, generator=g, device=device)
    x_true = torch.randn(A.ishape, generator=g)
    y = A(x_true.to(torch.complex64).to(device) if fam.is_complex else x_true.to(device))
    lik = GaussianLikelihood(A, y, 0.05)
    x = initial_noise(D.shape, 10.0, generator=g, device=device)
    return net, D, lik, x, g


def run(
    *,
    family: str = "pixel",
    size: int = 64,
    batch: int = 4,
    channels: int = 32,
    coils: int = 8,
    steps: int = 3,
    langevin: int = 30,
    repeats: int = 5,
    rows: str = "all",
    device: str = "cpu",
) -> dict[str, Any]:
    """Per-step seconds of each sampler, its ratio to one network forward (and forward + backward), peak memory."""
    device = torch.device(device)
    net, D, lik, x, g = _setup(family, size, batch, channels, coils, (1, 2, 2), (2,), device)
    sig = edm_sigmas(steps, sigma_max=10.0)
    n = steps

    def forward():
        with torch.no_grad():
            D(x, sigma_like(1.0, x))

    def forward_backward():
        x_in = x.detach().requires_grad_(True)
        out = D(x_in, sigma_like(1.0, x_in))
        (torch.view_as_real(out) if out.is_complex() else out).square().sum().backward()

    def no_grad(fn):
        def run_no_grad():
            with torch.no_grad():
                fn()

        return run_no_grad

    table: list[tuple[str, int, Callable[[], object]]] = [
        ("A-DPS step (score, Euler)", n, lambda: sample_adps(D, x, sig, lik)),
        (f"DAPS level (ode=1, {langevin} Langevin, no_grad)", n,
         no_grad(lambda: sample_daps(D, x, sig, lik, generator=g, langevin_steps=langevin))),
    ]  # fmt: skip
    if rows == "all":
        table = [
            ("Euler step (no_grad)", n, no_grad(lambda: sample_euler(D, x, sig))),
            ("Heun step (no_grad)", n, no_grad(lambda: sample_heun(D, x, sig))),
            table[0],
            ("A-DPS step (Heun)", n, lambda: sample_adps(D, x, sig, lik, heun=True)),
            table[1],
            (f"DAPS level (ode=1, {langevin} Langevin, grad on)", n,
             lambda: sample_daps(D, x, sig, lik, generator=g, langevin_steps=langevin)),
            (f"DAPS level (ode=5, {langevin} Langevin, no_grad)", n,
             no_grad(lambda: sample_daps(D, x, sig, lik, generator=g, ode_steps=5, langevin_steps=langevin))),
            ("one-step (A-OS)", 1, no_grad(lambda: one_step(D, lik))),
            ("one-step + CG data consistency (20 it)", 1, no_grad(lambda: one_step(D, lik, data_consistency="cg"))),
        ]  # fmt: skip
    elif rows != "report":
        raise ValueError(f"rows must be one of {ROW_SETS}, got {rows!r}")

    forward(), forward_backward()  # warm-up
    with PeakMemory(device) as mem_fwd:
        forward()
    out_rows, fb_over_f = [], []
    for name, k, fn in table:
        fn()  # warm-up
        t_row, r_f, r_fb, t_fwd = [], [], [], []
        for _ in range(repeats):
            t_f = timed(forward, device)
            t_fb = timed(forward_backward, device)
            t = timed(fn, device) / k
            t_row.append(t)
            t_fwd.append(t_f)
            r_f.append(t / t_f)
            r_fb.append(t / t_fb)
            fb_over_f.append(t_fb / t_f)
        with PeakMemory(device) as mem:
            fn()
        q1, med, q3 = quartiles(r_f)
        out_rows.append({
            "sampler": name,
            "ms_per_step": 1e3 * statistics.median(t_row),
            "fwd_ms": 1e3 * statistics.median(t_fwd),
            "per_fwd": med,
            "per_fwd_iqr": [q1, q3],
            "per_fwd_bwd": statistics.median(r_fb),
            "peak_mib": mem.mib,
        })  # fmt: skip
    return {
        "family": family,
        "case": f"{family}, {size}², batch {batch}" + (f", {coils} coils" if family == "mri" else ""),
        "device": str(device),
        "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
        "steps": steps,
        "forward_peak_mib": mem_fwd.mib,
        "fwd_bwd_over_fwd": statistics.median(fb_over_f),
        "peak_method": mem_fwd.method,
        "rows": out_rows,
    }


def adps_seconds_per_slice(
    *,
    family: str = "mri",
    size: int = 320,
    coils: int = 8,
    channels: int = 64,
    mult: tuple[int, ...] = (1, 2, 2, 2),
    attn: tuple[int, ...] | None = None,
    steps_timed: int = 10,
    steps_total: int = 100,
    repeats: int = 3,
    device: str = "cuda",
) -> dict[str, Any]:
    """Seconds of one A-DPS reconstruction of one slice (batch 1): ``steps_timed`` steps, scaled to ``steps_total``.

    ``attn``: U-Net levels with self-attention (default: the lowest resolution only).
    """
    device = torch.device(device)
    attn = (len(mult) - 1,) if attn is None else attn
    net, D, lik, x, _ = _setup(family, size, 1, channels, coils, mult, attn, device)
    sig = edm_sigmas(steps_timed, sigma_max=10.0)
    sample_adps(D, x, sig, lik)  # warm-up
    times = [timed(lambda: sample_adps(D, x, sig, lik), device) / steps_timed for _ in range(repeats)]
    with PeakMemory(device) as mem:
        sample_adps(D, x, sig, lik)
    per_step = statistics.median(times)
    return {
        "case": f"A-DPS, {family} {size}²" + (f", {coils} coils" if family == "mri" else "") + ", batch 1",
        "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
        "s_per_step": per_step,
        "steps_total": steps_total,
        "s_per_slice": per_step * steps_total,
        "peak_mib": mem.mib,
    }


def closure_reconstruction(
    *, methods: tuple[str, ...] = ("daps", "dps"), observations: int = 2, rounds: int = 2, seed: int = 11
) -> dict[str, Any]:
    """Wall time of the black-hole example's reconstruction (shipped prior ``black-hole-eht2017-32``, held-out
    observations, the example's DAPS / A-DPS settings), and the same run with the interferometer's DFT tables
    recomputed at every call (as before they were cached, issue #21): interleaved rounds, equal seeds.

    Returns per method: seconds per observation (median over rounds) with and without the cache, the paired
    ratio, the mean closure-phase χ² of the samples and whether both runs gave identical estimates.
    """
    from ambient_science import pretrained
    from ambient_science.operators.visibilities import Interferometer
    from ambient_science.pipelines.eht import closure_observation, held_out_observations
    from ambient_science.pipelines.eht_reconstruct import reconstruct_closure
    from ambient_science.pipelines.eht_setup import DAPS, DPS, Setup

    prior = pretrained.load("black-hole-eht2017-32")
    setup = Setup()
    cases = held_out_observations(observations, setup.npix, setup.fov_uas, seed=0)
    obs, flux = [c.obs for c in cases], [c.total_flux for c in cases]
    closures = [closure_observation(o) for o in obs]
    cached = Interferometer._exponentials

    def uncached(self, dtype):
        return self._compute_exponentials(dtype)

    out = {}
    for method in methods:
        cfg, S = (DAPS, setup.num_samples) if method == "daps" else (DPS, setup.dps_samples)
        times: dict[str, list[float]] = {"cached": [], "uncached": []}
        posts = {}
        for r in range(rounds):
            for mode in ("uncached", "cached") if r % 2 == 0 else ("cached", "uncached"):
                Interferometer._exponentials = cached if mode == "cached" else uncached
                try:
                    g = torch.Generator().manual_seed(seed)
                    t = time.perf_counter()
                    posts[mode] = reconstruct_closure(
                        prior, obs, flux, num_samples=S, generator=g, settings=cfg, closures=closures, progress=False
                    )
                    times[mode].append((time.perf_counter() - t) / observations)
                finally:
                    Interferometer._exponentials = cached
        q1, med, q3 = quartiles([u / c for u, c in zip(times["uncached"], times["cached"])])
        out[method] = {
            "samples": S,
            "levels": cfg.levels,
            "s_per_obs": statistics.median(times["cached"]),
            "s_per_obs_uncached": statistics.median(times["uncached"]),
            "speedup": med,
            "speedup_iqr": [q1, q3],
            "chi2_cphase": float(posts["cached"].chi2_cphase.mean()),
            "identical": bool(torch.equal(posts["cached"].estimate, posts["uncached"].estimate)),
        }
    return out


#: the black-hole DAPS variants :func:`closure_variants` runs: (label, changes to the example's DAPS settings);
#: the first is the reference of the paired per-observation differences
CLOSURE_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("example's DAPS (30 levels, 10 Langevin, curvature every level)", {"curvature_every": 1}),
    ("curvature every 3 levels", {"curvature_every": 3}),
    ("curvature every 5 levels", {"curvature_every": 5}),
    ("20 levels, curvature every 3", {"levels": 20, "curvature_every": 3}),
    ("polish 100 + mean polish 100 iterations", {"polish_iterations": 100, "polish_mean_iterations": 100}),
)


def closure_variants(
    *, observations: int = 8, seed: int = 11, variants=CLOSURE_VARIANTS, report: Callable | None = None
) -> list[dict[str, Any]]:
    """The black-hole example's DAPS (shipped ``black-hole-eht2017-32``, its held-out observations, seed 0 as the
    example) with changed settings: wall and CPU time per observation, the seconds spent in the final
    data-consistency steps (L-BFGS polish), and per observation the point estimate's blurred PSNR and closure-phase
    / log-closure-amplitude χ² with differences paired with the first variant; the samples' fit fraction."""
    import dataclasses

    import ambient_science.pipelines.eht_reconstruct as eht_reconstruct
    from ambient_science import pretrained
    from ambient_science.pipelines.eht import closure_observation, held_out_observations
    from ambient_science.pipelines.eht_eval import image_metrics, sample_stats
    from ambient_science.pipelines.eht_setup import DAPS, Setup

    prior = pretrained.load("black-hole-eht2017-32")
    setup = Setup()
    cases = held_out_observations(observations, setup.npix, setup.fov_uas, seed=0)
    closures = [closure_observation(c.obs) for c in cases]
    polish = eht_reconstruct._polish
    spent = [0.0]

    def timed_polish(*args, **kwargs):
        t = time.perf_counter()
        try:
            return polish(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    rows, reference = [], None
    for label, changes in variants:
        cfg = dataclasses.replace(DAPS, **changes)
        g = torch.Generator().manual_seed(seed)
        spent[0] = 0.0
        eht_reconstruct._polish = timed_polish
        try:
            t, cpu = time.perf_counter(), time.process_time()
            post = eht_reconstruct.reconstruct_closure(
                prior, [c.obs for c in cases], [c.total_flux for c in cases], num_samples=setup.num_samples,
                generator=g, settings=cfg, closures=closures, progress=False,
            )  # fmt: skip
            seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        finally:
            eht_reconstruct._polish = polish
        per = [
            image_metrics(post.estimate[i, 0].cpu().numpy(), c.truth, c.obs, prior.family.pixel_size,
                          blur_fwhm_uas=setup.blur_fwhm_uas, closure=closures[i])
            for i, c in enumerate(cases)
        ]  # fmt: skip
        blur = [r["blur_psnr"] for r in per]
        reference = reference or blur
        d = [a - b for a, b in zip(blur, reference)]
        rows.append({
            "variant": label, "settings": changes, "s_per_obs": seconds / observations,
            "cpu_s_per_obs": cpu / observations, "polish_s_per_obs": spent[0] / observations,
            "blur_psnr": statistics.mean(blur), "blur_psnr_per_obs": blur, "d_blur_psnr": statistics.mean(d),
            "d_blur_psnr_se": statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0,
            "chi2_cphase": statistics.mean(r["chi2_cphase"] for r in per),
            "chi2_logcamp": statistics.mean(r["chi2_logcamp"] for r in per),
            "fit_fraction": sample_stats(post).get("fit_fraction"),
        })  # fmt: skip
        if report is not None:
            report(rows[-1])
    return rows


#: the MRI A-DPS variants :func:`mri_reconstruction` times: (label, num_samples, steps, sample_batch, sigma_max[,
#: sampler options, with "final_dc", "shifts", "sigma_min", "precision", "start" and "antithetic" read here]); the
#: first is the reference of the paired
#: per-slice differences
def _pairs(samples: int) -> str:
    return f"{samples} samples ({samples // 2} antithetic pair{'s' if samples > 2 else ''})"


def _warm_start(steps: int, sigma_max: float, *, start: str = "data", samples: int = 4, **extra) -> tuple:
    """An :data:`MRI_VARIANTS` row: ``samples`` samples of ``steps`` steps from ``sigma_max`` started from the
    zero-filled image (``start="data"``) or L1-wavelet (``"l1"``), the per-step prox and forward-only guidance below
    σ 0.1, plus ``extra`` options (``sigma_min``, ``churn``, ``precision``, ``antithetic``), each named in the
    label."""
    label = f"{_pairs(samples) if extra.get('antithetic') else f'{samples} samples'} x {steps} steps from {sigma_max:g}"
    label += f" to {extra['sigma_min']:g}" if "sigma_min" in extra else ""
    label += f", churn {extra['churn']:g}" if "churn" in extra else ""
    label += f", start {'zero-filled' if start == 'data' else 'L1-wavelet'}, prox per step, forward-only guidance "
    label += "below sigma 0.1" + (", bfloat16 where native" if extra.get("precision") == "auto" else "")
    return label, samples, steps, 1, sigma_max, {"step_dc": "prox", "jacobian_sigma_min": 0.1, "start": start, **extra}


def _antithetic(samples: int, steps: int, sigma_max: float) -> tuple:
    """An :data:`MRI_VARIANTS` row: the EM card's sampler (per-step prox, forward-only guidance below σ 0.1) from
    pure noise at ``sigma_max``, ``samples`` samples in antithetic pairs."""
    label = f"{_pairs(samples)} x {steps} steps from {sigma_max:g}, prox per step, forward-only guidance below "
    label += "sigma 0.1"
    return label, samples, steps, 1, sigma_max, {"step_dc": "prox", "jacobian_sigma_min": 0.1, "antithetic": True}


MRI_VARIANTS: tuple[tuple, ...] = (
    ("4 samples x 48 steps from 80, one run per sample (before #21)", 4, 48, 1, 80.0, {"step_dc": None}),
    ("4 samples x 48 steps from 80, batched", 4, 48, None, 80.0, {"step_dc": None}),
    ("4 samples x 16 steps from 80, batched", 4, 16, None, 80.0, {"step_dc": None}),
    ("4 samples x 16 steps from 10, batched", 4, 16, None, 10.0, {"step_dc": None}),
    ("4 samples x 12 steps from 10, batched", 4, 12, None, 10.0, {"step_dc": None}),
    ("4 samples x 24 steps from 80, batched", 4, 24, None, 80.0, {"step_dc": None}),
    ("2 samples x 48 steps from 80, batched", 2, 48, None, 80.0, {"step_dc": None}),
    ("4 samples x 48 steps from 80, batched, no network Jacobian", 4, 48, None, 80.0,
     {"jacobian": False, "step_dc": None}),
    ("4 samples x 32 steps from 80, batched, no network Jacobian", 4, 32, None, 80.0,
     {"jacobian": False, "step_dc": None}),
    ("4 samples x 48 steps from 80, prox data consistency per step (#18)", 4, 48, 1, 80.0, {"step_dc": "prox"}),
    ("4 samples x 32 steps from 10, prox per step", 4, 32, 1, 10.0, {"step_dc": "prox"}),
    ("4 samples x 24 steps from 10, prox per step", 4, 24, 1, 10.0, {"step_dc": "prox"}),
    ("4 samples x 16 steps from 10, prox per step", 4, 16, 1, 10.0, {"step_dc": "prox"}),
    ("4 samples x 12 steps from 10, prox per step", 4, 12, 1, 10.0, {"step_dc": "prox"}),
    ("2 samples x 24 steps from 10, prox per step", 2, 24, 1, 10.0, {"step_dc": "prox"}),
    ("4 samples x 48 steps from 80, Gaussian Jacobian (forward only)", 4, 48, 1, 80.0,
     {"step_dc": None, "jacobian": "gaussian"}),
    ("4 samples x 24 steps from 10, prox per step, no network Jacobian", 4, 24, 1, 10.0,
     {"step_dc": "prox", "jacobian": False}),
    ("4 samples x 24 steps from 10, prox per step, Gaussian Jacobian", 4, 24, 1, 10.0,
     {"step_dc": "prox", "jacobian": "gaussian"}),
    ("4 samples x 20 steps from 10, prox per step", 4, 20, 1, 10.0, {"step_dc": "prox"}),
    ("4 samples x 12 Heun steps from 10, prox per step", 4, 12, 1, 10.0, {"step_dc": "prox", "heun": True}),
    ("4 samples x 10 Heun steps from 10, prox per step", 4, 10, 1, 10.0, {"step_dc": "prox", "heun": True}),
    # where the speckle enters (issue #19): the final CG step, the Jacobian, the per-step step, the sample average
    ("4 samples x 48 steps from 80, no final data consistency", 4, 48, 1, 80.0, {"step_dc": None, "final_dc": "none"}),
    ("1 sample x 48 steps from 80", 1, 48, 1, 80.0, {"step_dc": None}),
    ("16 samples x 24 steps from 10, prox per step", 16, 24, 1, 10.0, {"step_dc": "prox"}),
    ("4 samples x 20 steps from 10, prox per step, forward-only guidance above sigma 1", 4, 20, 1, 10.0,
     {"step_dc": "prox", "jacobian_sigma_max": 1.0}),
    ("4 samples x 20 steps from 10, prox per step, forward-only guidance above sigma 0.3", 4, 20, 1, 10.0,
     {"step_dc": "prox", "jacobian_sigma_max": 0.3}),
    # fewer steps started lower (the steps then fall where the prior and the data disagree most)
    ("4 samples x 16 steps from 5, prox per step", 4, 16, 1, 5.0, {"step_dc": "prox"}),
    ("4 samples x 16 steps from 3, prox per step", 4, 16, 1, 3.0, {"step_dc": "prox"}),
    ("4 samples x 14 steps from 3, prox per step", 4, 14, 1, 3.0, {"step_dc": "prox"}),
    # is the speckle the network's aliasing? its denoiser averaged over circular image shifts (an operator that
    # commutes with them: single-coil Cartesian), against more samples at a similar cost
    ("4 samples x 24 steps from 10, prox per step, denoiser averaged over shifts (0,0), (1,1)", 4, 24, 1, 10.0,
     {"step_dc": "prox", "shifts": [(0, 0), (1, 1)]}),
    ("4 samples x 24 steps from 10, prox per step, denoiser averaged over 4 one-pixel shifts", 4, 24, 1, 10.0,
     {"step_dc": "prox", "shifts": [(0, 0), (1, 0), (0, 1), (1, 1)]}),
    ("8 samples x 24 steps from 10, prox per step", 8, 24, 1, 10.0, {"step_dc": "prox"}),
    # cheaper steps at LOW noise, where the denoiser is near the identity (c_skip -> 1): forward-only guidance there
    ("4 samples x 24 steps from 10, prox per step, forward-only guidance below sigma 0.1", 4, 24, 1, 10.0,
     {"step_dc": "prox", "jacobian_sigma_min": 0.1}),
    ("4 samples x 24 steps from 10, prox per step, forward-only guidance below sigma 0.3", 4, 24, 1, 10.0,
     {"step_dc": "prox", "jacobian_sigma_min": 0.3}),
    ("4 samples x 20 steps from 10, prox per step, forward-only guidance below sigma 0.1", 4, 20, 1, 10.0,
     {"step_dc": "prox", "jacobian_sigma_min": 0.1}),
    ("4 samples x 24 steps from 10, prox per step, the 4 samples in one batch", 4, 24, None, 10.0,
     {"step_dc": "prox"}),
    # the same spacing above sigma 0.02 as 20 steps down to 0.002, without the steps below it
    ("4 samples x 16 steps from 10 to 0.02, prox per step, forward-only guidance below sigma 0.1", 4, 16, 1, 10.0,
     {"step_dc": "prox", "jacobian_sigma_min": 0.1, "sigma_min": 0.02}),
    ("4 samples x 18 steps from 10 to 0.01, prox per step, forward-only guidance below sigma 0.1", 4, 18, 1, 10.0,
     {"step_dc": "prox", "jacobian_sigma_min": 0.1, "sigma_min": 0.01}),
    # the network in bfloat16 where the CPU computes it natively (AVX-512 BF16 / AMX), and fewer Jacobian steps
    ("4 samples x 20 steps from 10, prox per step, forward-only guidance below sigma 0.1, bfloat16 where native",
     4, 20, 1, 10.0, {"step_dc": "prox", "jacobian_sigma_min": 0.1, "precision": "auto"}),
    ("4 samples x 20 steps from 10, prox per step, forward-only guidance below sigma 0.3", 4, 20, 1, 10.0,
     {"step_dc": "prox", "jacobian_sigma_min": 0.3}),
    ("4 samples x 20 steps from 10, prox per step, forward-only guidance below sigma 0.3, bfloat16 where native",
     4, 20, 1, 10.0, {"step_dc": "prox", "jacobian_sigma_min": 0.3, "precision": "auto"}),
    # a clean-image prior (EM, issue #19) from sigma 80: the schedules of the clean baseline, made cheaper
    ("4 samples x 48 steps from 80, prox per step, forward-only guidance below sigma 0.1", 4, 48, 1, 80.0,
     {"step_dc": "prox", "jacobian_sigma_min": 0.1}),
    ("4 samples x 32 steps from 80, prox per step, forward-only guidance below sigma 0.1", 4, 32, 1, 80.0,
     {"step_dc": "prox", "jacobian_sigma_min": 0.1}),
    ("4 samples x 24 steps from 80, prox per step, forward-only guidance below sigma 0.1", 4, 24, 1, 80.0,
     {"step_dc": "prox", "jacobian_sigma_min": 0.1}),
    ("4 samples x 24 steps from 20, prox per step, forward-only guidance below sigma 0.1", 4, 24, 1, 20.0,
     {"step_dc": "prox", "jacobian_sigma_min": 0.1}),
    # a warm start (CCDF): x0 + sigma_max eps from an estimate x0 (zero-filled: start "data"; or L1-wavelet), so the
    # run needs only the steps below sigma_max
    *(_warm_start(16, 2.0), _warm_start(16, 5.0), _warm_start(16, 2.0, start="l1"), _warm_start(12, 2.0),
      _warm_start(16, 1.0), _warm_start(20, 3.0), _warm_start(24, 3.0), _warm_start(20, 3.0, sigma_min=0.01),
      _warm_start(20, 3.0, churn=5.0), _warm_start(20, 5.0), _warm_start(18, 3.0, sigma_min=0.01),
      _warm_start(20, 3.0, sigma_min=0.01, precision="auto"), _warm_start(16, 2.0, sigma_min=0.01)),
    # a clean-image prior's samples in one batch (the Cartesian operator tiles itself)
    ("4 samples x 32 steps from 80, prox per step, forward-only guidance below sigma 0.1, the 4 samples in one batch",
     4, 32, None, 80.0, {"step_dc": "prox", "jacobian_sigma_min": 0.1}),
    # antithetic pairs (the second run of a pair negates every Gaussian draw of the first): the posterior mean's
    # variance drops by the part of the samples that is odd in the noise
    *(_antithetic(2, 32, 80.0), _antithetic(4, 32, 80.0), _antithetic(2, 24, 20.0),
      _warm_start(20, 3.0, sigma_min=0.01, samples=2, antithetic=True),
      _warm_start(32, 3.0, sigma_min=0.01, samples=2, antithetic=True),
      _warm_start(20, 3.0, sigma_min=0.01, samples=4, antithetic=True)),
    # the ambient prior's card (20 steps from 10) in pairs
    *(_antithetic(2, 20, 10.0), _antithetic(4, 20, 10.0)),
    # the clean prior's card (48 steps from 80, neither device) in pairs
    ("2 samples (1 antithetic pair) x 48 steps from 80", 2, 48, 1, 80.0, {"step_dc": None, "antithetic": True}),
    ("4 samples (2 antithetic pairs) x 48 steps from 80", 4, 48, 1, 80.0, {"step_dc": None, "antithetic": True}),
)  # fmt: skip


class _ShiftedDenoiser:
    """``mean over (dy, dx) of roll⁻¹(D(roll(x, (dy, dx))))``: a shift-equivariant denoiser is unchanged by it, the
    part of its output that is not (aliasing of the U-Net's down- and upsampling) is averaged down."""

    def __init__(self, base, shifts):
        self.base, self.shifts = base, [tuple(s) for s in shifts]
        self.shape, self.dtype, self.batch_size = base.shape, base.dtype, base.batch_size
        self.sigma_floor = base.sigma_floor

    @property
    def device(self) -> torch.device:
        return self.base.device

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        out = [torch.roll(self.base(torch.roll(x, s, dims=(-2, -1)), sigma), (-s[0], -s[1]), dims=(-2, -1))
               for s in self.shifts]  # fmt: skip
        return torch.stack(out).mean(dim=0)


class _ShiftAveragedPrior(Prior):
    """``prior`` whose denoisers are :class:`_ShiftedDenoiser` (the ``shifts`` option of :data:`MRI_VARIANTS`)."""

    def __init__(self, prior: Prior, shifts):
        super().__init__(prior.network, prior.family, freeze=False, sigma_n=prior.sigma_n)
        self.config, self.shifts = dict(prior.config), shifts

    def denoiser(self, *args, **kwargs):
        return _ShiftedDenoiser(super().denoiser(*args, **kwargs), self.shifts)


def _slice_metrics(truth: torch.Tensor, estimate: torch.Tensor, volume: torch.Tensor) -> tuple[list, list]:
    """Per-slice PSNR and SSIM (data range: the slice's volume maximum, as the per-volume metrics)."""
    from ambient_science.metrics.mri import psnr, ssim

    mag = estimate.abs().pow(2).sum(dim=1).sqrt().float().cpu()
    top = {int(v): float(truth[volume == v].abs().max()) for v in volume.unique()}
    pairs = [(truth[i], mag[i], top[int(volume[i])]) for i in range(truth.shape[0])]
    return [psnr(t, m, maxval=v) for t, m, v in pairs], [ssim(t, m, maxval=v) for t, m, v in pairs]


def mri_reconstruction(
    test_file: str,
    *,
    test_slices: int = 4,
    seed: int = 0,
    variants=MRI_VARIANTS,
    report: Callable | None = None,
    prior_path: str | None = None,
) -> list[dict[str, Any]]:
    """The MRI example's A-DPS (shipped ``mri-knee-synthetic-r4``, or the prior at ``prior_path``;
    :func:`ambient_science.pipelines.mri_eval.evaluate`'s settings: Ã_inf "full", CG data consistency, safe mode with
    the L1 fallback) on the held-out slices of ``test_file`` (the example writes ``<out>/data/test_r4_64.h5``): wall
    and CPU time, volume PSNR/SSIM per variant, and per-slice PSNR/SSIM differences paired with the first variant
    (mean, its standard error, slices worse); equal seeds."""
    from ambient_science import pretrained
    from ambient_science.pipelines.mri_eval import held_out_batch, l1_fallback, volume_metrics
    from ambient_science.sampling import reconstruction
    from ambient_science.sampling.prior import load_prior
    from ambient_science.sampling.reconstruction import reconstruct

    prior = pretrained.load("mri-knee-synthetic-r4") if prior_path is None else load_prior(prior_path)
    batch = held_out_batch(test_file, test_slices)
    lik = GaussianLikelihood(batch.A, batch.y, batch.sigma)
    # the fit test runs in every variant (safe mode "auto") and costs the same in each: timed once on its own (after
    # a first call that loads the scorer), so that the sampler's own time is each row's time minus this
    check_fit = reconstruction._fit_report
    check_fit(prior, lik, torch.Generator().manual_seed(seed), "auto")
    t = time.perf_counter()
    check_fit(prior, lik, torch.Generator().manual_seed(seed), "auto")
    fit_seconds = time.perf_counter() - t
    rows, reference = [], None
    for label, samples, steps, sample_batch, sigma_max, *extra in variants:
        # every setting explicit, so that what the shipped card records (its "sampler" entry) changes no variant
        options = {"step_dc": None, "jacobian_sigma_min": 0.0, **(dict(extra[0]) if extra else {})}
        final_dc = options.pop("final_dc", "cg")
        sigma_min = options.pop("sigma_min", max(SIGMA_MIN, prior.sigma_n))  # EDM's floor, or the prior's
        shifts = options.pop("shifts", None)
        precision = options.pop("precision", "float32")
        start = options.pop("start", "noise")
        antithetic = options.pop("antithetic", False)
        if start == "l1":
            start = l1_fallback(prior, batch.A)
            if start is None:
                raise ValueError(f"{label}: the prior's card records no L1-wavelet lambda (fit.fallback_l1_lam)")
        g = torch.Generator().manual_seed(seed)
        t, cpu = time.perf_counter(), time.process_time()
        called = _ShiftAveragedPrior(prior, shifts) if shifts else prior
        post = reconstruct(
            called, lik, method="dps", generator=g, num_samples=samples, steps=steps, inference_operator="full",
            sigma_max=sigma_max, sigma_min=sigma_min, sampler_options=options,
            data_consistency=final_dc, progress=False, fallback=l1_fallback(prior, batch.A), sample_batch=sample_batch,
            precision=precision, start=start, antithetic=antithetic,
        )  # fmt: skip
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        m = volume_metrics(batch.truth, post.mean, batch.volume)
        psnrs, ssims = _slice_metrics(batch.truth, post.mean, batch.volume)
        reference = reference or (psnrs, ssims)
        paired = {}
        for key, now, ref in (("psnr", psnrs, reference[0]), ("ssim", ssims, reference[1])):
            d = [a - b for a, b in zip(now, ref)]
            se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0
            paired[f"d_{key}"], paired[f"d_{key}_se"] = statistics.mean(d), se
            paired[f"{key}_slices_worse"] = sum(v < 0 for v in d)
        rows.append({"variant": label, "seconds": seconds, "cpu_seconds": cpu, "fit_seconds": fit_seconds,
                     "slices": int(batch.y.shape[0]), **m,
                     "bg_hf_db": background_hf(post.mean, batch.truth),
                     "bg_hf_sample_db": background_hf(post.samples[0] if post.samples is not None else post.mean,
                                                      batch.truth),
                     **paired, "psnr_per_slice": psnrs, "ssim_per_slice": ssims})  # fmt: skip
        if report is not None:
            report(rows[-1])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="pixel", choices=FAMILIES)
    parser.add_argument("--size", type=int, default=64, help="image side (pixels)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=32, help="U-Net model_channels")
    parser.add_argument("--coils", type=int, default=8, help="coils of the mri family")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed sampler run")
    parser.add_argument("--langevin", type=int, default=30, help="DAPS Langevin steps per level")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch, OpenMP and BLAS threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--closure", type=int, default=0, metavar="N",
        help="instead: time the black-hole example's DAPS and A-DPS on N held-out observations (shipped prior)",
    )  # fmt: skip
    parser.add_argument(
        "--mri", default=None, metavar="FILE",
        help="instead: time the MRI example's A-DPS on the held-out slices of FILE (examples/mri_knee.py writes "
             "<out>/data/test_r4_64.h5), shipped prior, before/after the batched samples and the shorter schedule",
    )  # fmt: skip
    parser.add_argument(
        "--closure-variants", type=int, nargs="*", default=None, metavar="I",
        help="instead: the black-hole example's DAPS with the settings CLOSURE_VARIANTS[I] (all when no I) on "
             "--closure-observations held-out observations: time, blurred PSNR, closure chi2",
    )  # fmt: skip
    parser.add_argument("--closure-observations", type=int, default=8)
    parser.add_argument("--mri-variants", type=int, nargs="*", default=None, help="indices into MRI_VARIANTS")
    parser.add_argument("--mri-seed", type=int, default=0, help="seed of every variant's draws")
    parser.add_argument("--mri-prior", default=None, help="--mri with this prior (default: the shipped knee prior)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.mri:
        variants = [MRI_VARIANTS[i] for i in args.mri_variants] if args.mri_variants else MRI_VARIANTS

        def show(row: dict[str, Any]) -> None:
            print(f"{row['variant']:70s} {row['seconds']:7.1f} s ({row['cpu_seconds']:.1f} s CPU; the fit test "
                  f"{row['fit_seconds']:.1f} s of it) for {row['slices']} "
                  f"slices  PSNR {row['psnr']:.2f} dB  SSIM {row['ssim']:.4f}  per slice vs the first: PSNR "
                  f"{row['d_psnr']:+.2f} ± {row['d_psnr_se']:.2f} dB ({row['psnr_slices_worse']} worse), SSIM "
                  f"{row['d_ssim']:+.4f} ± {row['d_ssim_se']:.4f}; speckle bg_hf {row['bg_hf_db']:.1f} dB (one sample "
                  f"{row['bg_hf_sample_db']:.1f})", flush=True)  # fmt: skip

        mri_reconstruction(args.mri, variants=variants, report=show, seed=args.mri_seed, prior_path=args.mri_prior)
        return
    if args.closure_variants is not None:
        picked = [CLOSURE_VARIANTS[i] for i in args.closure_variants] if args.closure_variants else CLOSURE_VARIANTS

        def show_closure(row: dict[str, Any]) -> None:
            print(f"{row['variant']:64s} {row['s_per_obs']:6.1f} s/obs ({row['cpu_s_per_obs']:.1f} CPU, polish "
                  f"{row['polish_s_per_obs']:.1f})  blurred PSNR {row['blur_psnr']:.2f} dB (paired "
                  f"{row['d_blur_psnr']:+.2f} ± {row['d_blur_psnr_se']:.2f})  chi2 cp {row['chi2_cphase']:.2f} "
                  f"lca {row['chi2_logcamp']:.2f}  fit {row['fit_fraction']:.2f}", flush=True)  # fmt: skip

        closure_variants(observations=args.closure_observations, variants=picked, report=show_closure)
        return
    if args.closure:
        for method, row in closure_reconstruction(observations=args.closure).items():
            print(f"{method}: {row['s_per_obs']:.1f} s per observation ({row['samples']} samples, {row['levels']} "
                  f"levels); with the DFT tables recomputed at every call {row['s_per_obs_uncached']:.1f} s "
                  f"({row['speedup']:.2f}x, IQR {row['speedup_iqr'][0]:.2f}-{row['speedup_iqr'][1]:.2f}); "
                  f"closure-phase chi2 {row['chi2_cphase']:.2f}; identical estimates: {row['identical']}")  # fmt: skip
        return
    r = run(
        family=args.family, size=args.size, batch=args.batch, channels=args.channels, coils=args.coils,
        steps=args.steps, langevin=args.langevin, repeats=args.repeats, device=args.device,
    )  # fmt: skip
    print(f"device {r['device']}, torch threads {torch.get_num_threads()}, U-Net {r['params_M']:.2f} M parameters "
          f"(model_channels={args.channels}, mult=(1, 2, 2)), {r['case']}, median of {args.repeats} "
          f"interleaved repeats")  # fmt: skip
    print(f"{'sampler step':50s} {'ms/step':>9s} {'fwd ms':>8s} {'/ fwd':>7s} {'/ fwd+bwd':>10s} {'peak MiB':>9s}")
    for row in r["rows"]:
        print(f"{row['sampler']:50s} {row['ms_per_step']:9.1f} {row['fwd_ms']:8.1f} {row['per_fwd']:7.2f} "
              f"{row['per_fwd_bwd']:10.2f} {row['peak_mib']:9.0f}")  # fmt: skip
    print(f"forward + backward to the input = {r['fwd_bwd_over_fwd']:.2f} × forward (median over all repeats); "
          f"one forward peaks at {r['forward_peak_mib']:.0f} MiB ({r['peak_method']})")  # fmt: skip


if __name__ == "__main__":
    ensure_thread_env()
    main()
