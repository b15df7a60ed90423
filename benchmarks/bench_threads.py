"""Seconds per ambient training step under different CPU thread settings, each in a fresh process (issue #21).

What it shows: why ``ambient_science.threads.configure_threads`` picks one thread per *free* core and passive
OpenMP waiting. Each setting runs in its own process (OpenMP reads ``OMP_WAIT_POLICY`` once, at start-up), the
settings alternate over ``--rounds`` (A B C D, D C B A, ...), and each process reports the median of its step
times. The step is the MRI example's CPU preset (64², single coil, batch 16, U-Net with 16 channels): an
``AmbientLoss`` step with AdamW. On an idle machine every setting is close; on a loaded one PyTorch's default
(one spinning thread per core) is several times slower than one thread.

Run (the load average at the start of each process is printed with it):

    python benchmarks/bench_threads.py                      # settings: torch default, PASSIVE, 1 thread, auto
    python benchmarks/bench_threads.py --rounds 3 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

#: (label, intra-op threads or "" for torch's default or "auto" for configure_threads(), OMP_WAIT_POLICY or None)
SETTINGS = (
    ("torch default (a thread per core, OpenMP spinning)", "", None),
    ("a thread per core, OMP_WAIT_POLICY=PASSIVE", "", "PASSIVE"),
    ("1 thread", "1", None),
    ("configure_threads() (free share of the cores, PASSIVE)", "auto", None),
)


def _worker(threads: str, seconds: float) -> None:
    """One process: warm up, then time steps for about ``seconds`` (at least 3); print a JSON line."""
    load = os.getloadavg()[0]
    if threads == "auto":
        from ambient_science.threads import configure_threads

        configure_threads()
    import torch

    if threads not in ("", "auto"):
        torch.set_num_threads(int(threads))
    from ambient_science.network import UNetConfig, build_network
    from ambient_science.operators import CartesianMRIFamily
    from ambient_science.training.losses import AmbientLoss

    fam = CartesianMRIFamily((1, 64, 64), acceleration=4, center_fraction=0.08)
    cfg = UNetConfig(img_channels=2, cond_channels=1, model_channels=16, channel_mult=(1, 2, 2), num_blocks=1,
                     attn_levels=(), mid_attention=True)  # fmt: skip
    torch.manual_seed(0)
    net = build_network(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    A = fam.sample(16, generator=g)
    x = 0.5 * torch.complex(torch.randn(16, 1, 64, 64, generator=g), torch.randn(16, 1, 64, 64, generator=g))
    y = A(x)
    loss_fn = AmbientLoss(fam)

    def step():
        loss = loss_fn(net, y, A, generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(), step()
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while len(times) < 3 or (time.perf_counter() < stop and len(times) < 200):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    print(json.dumps({"threads": torch.get_num_threads(), "wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                      "median_s": statistics.median(times), "steps": len(times), "load": load}))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=40.0, help="timed seconds per process (at least 3 steps)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        _worker(args.worker, args.seconds)
        return
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    results: dict[str, list[dict]] = {label: [] for label, _, _ in SETTINGS}
    for r in range(args.rounds):
        for label, threads, policy in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
            env = dict(base, **({"OMP_WAIT_POLICY": policy} if policy else {}))
            cmd = [sys.executable, __file__, "--worker", threads, "--seconds", str(args.seconds)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            results[label].append(row)
            print(f"round {r + 1}: {label:56s} {row['median_s']:7.2f} s/step  ({row['threads']} threads, "
                  f"{row['steps']} steps, load {row['load']:.1f})", flush=True)  # fmt: skip
    print(f"\nmedian over {args.rounds} rounds, {os.cpu_count()} logical CPUs:")
    for label, rows in results.items():
        print(f"  {label:56s} {statistics.median(r['median_s'] for r in rows):7.2f} s/step")


if __name__ == "__main__":
    main()
