"""Ambient-loss training step vs the plain EDM step on the same U-Net, and training images/s.

What it shows: the ambient machinery (further corruption ``Ã``, ``x̃ = Ãᴴ(B y + σ Ã ε)``, conditioning
channel, ``‖A D − y‖²``) costs little on top of EDM training (target ≤ 1.10× the EDM step). Both steps
are full optimisation steps (forward, backward, AdamW) through :func:`ambient_science.trainer.train_step`
logic; the networks differ only by the ambient net's one extra (mask) input channel. Timings are
interleaved (EDM, ambient, EDM, ...) and the median is reported, so a busy machine biases neither.

Run:
    python benchmarks/bench_train_step.py                       # CPU demo size: 64x64, batch 16
    python benchmarks/bench_train_step.py --device cuda --size 320 --batch 8 --channels 128
    python benchmarks/bench_train_step.py --full                # + images/s of the whole trainer loop
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from ambient_science.distributed import resolve_device
from ambient_science.losses import AmbientLoss, EDMLoss
from ambient_science.network import UNetConfig, build_network
from ambient_science.operators import PixelMaskFamily


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _net(cond: int, args, device):
    cfg = UNetConfig(
        img_channels=1,
        cond_channels=cond,
        model_channels=args.channels,
        channel_mult=tuple(args.mult),
        num_blocks=args.blocks,
        attn_levels=tuple(args.attn),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network(cfg).to(device)
    return net, torch.optim.AdamW(net.parameters(), lr=1e-4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--mult", type=int, nargs="+", default=[1, 2, 2])
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--attn", type=int, nargs="*", default=[2])
    p.add_argument("--steps", type=int, default=1, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=15, help="interleaved blocks per loss")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--full", action="store_true", help="also time the whole trainer loop (data, EMA, logging)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    shape = (1, args.size, args.size)
    family = PixelMaskFamily(shape, p=0.5, delta=0.1)
    g = torch.Generator(device=device).manual_seed(0)
    x = 0.5 * torch.randn(args.batch, *shape, generator=g, device=device)
    A = family.sample(args.batch, generator=g, device=device)
    y = A(x)

    edm_net, edm_opt = _net(0, args, device)
    amb_net, amb_opt = _net(1, args, device)
    edm_loss, amb_loss = EDMLoss(), AmbientLoss(family)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16 and device.type == "cuda")

    def edm_step():
        with torch.autocast(**autocast):
            loss = edm_loss(edm_net, x, generator=g).mean()
        edm_opt.zero_grad(set_to_none=True)
        loss.backward()
        edm_opt.step()

    def ambient_step():
        with torch.autocast(**autocast):
            loss = amb_loss(amb_net, y, A, generator=g).mean()
        amb_opt.zero_grad(set_to_none=True)
        loss.backward()
        amb_opt.step()

    def timed(step) -> float:
        _sync(device)
        t = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        return (time.perf_counter() - t) / args.steps

    for _ in range(2):  # warm-up (allocator, kernels)
        edm_step()
        ambient_step()
    edm_t, amb_t = [], []
    for _ in range(args.repeats):
        edm_t.append(timed(edm_step))
        amb_t.append(timed(ambient_step))
    e, a = statistics.median(edm_t), statistics.median(amb_t)
    params = sum(p.numel() for p in amb_net.parameters())
    print(f"device {device}, threads {torch.get_num_threads()}, U-Net {params / 1e6:.2f} M params, "
          f"{args.size}x{args.size}, batch {args.batch}")  # fmt: skip
    print(f"EDM step      {e * 1e3:8.1f} ms   ({args.batch / e:7.1f} images/s)")
    print(f"ambient step  {a * 1e3:8.1f} ms   ({args.batch / a:7.1f} images/s)")
    print(f"ambient / EDM {a / e:8.3f}x  (target <= 1.10x)")
    if args.full:
        _full_trainer(args, family, x, device)


def _full_trainer(args, family, x, device) -> None:
    """Images/s of :func:`ambient_science.trainer.train` on in-memory measurements (from its metrics)."""
    import json

    from ambient_science.datasets.measurements import MeasurementDataset
    from ambient_science.train_config import RunConfig, TrainConfig
    from ambient_science.trainer import train

    n = args.batch * 4
    A = family.sample(n, generator=torch.Generator().manual_seed(1))
    xs = x.to("cpu").repeat(4, 1, 1, 1)
    data = MeasurementDataset(A(xs), A.params(), family)
    steps = args.steps * args.repeats
    with tempfile.TemporaryDirectory() as out:
        cfg = RunConfig(
            network={"model_channels": args.channels, "channel_mult": args.mult, "num_blocks": args.blocks,
                     "attn_levels": args.attn},
            train=TrainConfig(out_dir=out, steps=steps, batch_size=args.batch, log_every=steps // 2, device=str(device),
                              progress=False, checkpoint_every=0, bf16=args.bf16),
        )  # fmt: skip
        train(cfg, data)
        last = json.loads(open(f"{out}/metrics.jsonl").read().splitlines()[-1])
    print(f"trainer loop  {last['sec_per_step'] * 1e3:8.1f} ms   ({last['images_per_s']:7.1f} images/s, "
          "second half of the run: data loading, EMA and the non-finite guard included)")  # fmt: skip


if __name__ == "__main__":
    main()
