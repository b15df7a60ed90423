"""Data-parallel training through torchrun on CPU (gloo): gradients match a single process; the CLI runs."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import default_collate

from ambient_science.datasets.measurements import MeasurementDataset, save_measurements
from ambient_science.network import UNetConfig
from ambient_science.operators import PixelMaskFamily
from ambient_science.training.config import TrainConfig
from ambient_science.training.distributed import DistInfo, ResumableSampler
from ambient_science.training.losses import NoisyAmbientLoss
from ambient_science.training.trainer import _init_network, step_seed, train_step

pytestmark = pytest.mark.slow

SEED, BATCH = 3, 8
NET = UNetConfig(img_channels=1, cond_channels=1, model_channels=8, channel_mult=(1, 2), attn_levels=(1,))


def _data() -> MeasurementDataset:
    family = PixelMaskFamily((1, 8, 8), p=0.4, delta=0.2)
    g = torch.Generator().manual_seed(0)
    A = family.sample(20, generator=g)
    return MeasurementDataset(A(0.5 * torch.randn(20, 1, 8, 8, generator=g)), A.params(), family)


def _net() -> torch.nn.Module:
    """The trainer's initial network, its zero-initialised output layers perturbed so every gradient is non-zero."""
    raw = _init_network(NET, TrainConfig(seed=SEED), torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in raw.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return raw


def _torchrun(args: list[str], cwd, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


WORKER = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, sys.argv[2])
    torch.set_num_threads(1)
    from test_ddp import _data, _net, SEED, BATCH
    from ambient_science.training.distributed import barrier, init_distributed, shutdown_distributed, wrap_ddp
    from ambient_science.training.losses import NoisyAmbientLoss
    from ambient_science.training.trainer import make_loader, step_seed, train_step

    info = init_distributed("cpu")
    data = _data()
    raw = _net()
    model = wrap_ddp(raw, info)
    loader, sampler = make_loader(data, info, batch_size=BATCH, seed=SEED)
    sampler.set_epoch(0)
    batch = next(iter(loader))
    g = torch.Generator().manual_seed(step_seed(SEED, info.rank, 0))
    opt = torch.optim.AdamW(raw.parameters())
    loss, norm, ok = train_step(model, NoisyAmbientLoss(data.family), batch, family=data.family, optimizer=opt,
                                generator=g, info=info, update=False)
    assert ok
    if info.rank == 0:
        torch.save({n: p.grad for n, p in raw.named_parameters()}, sys.argv[1])
    barrier(info)  # rank 0 writes first: a gloo group torn down under it aborts that rank at exit
    shutdown_distributed(info)
    """
)


def test_two_process_gradients_match_single_process(tmp_path):
    """DDP's averaged gradient = the mean of each rank's gradient on its share, with its own generator."""
    (tmp_path / "worker.py").write_text(WORKER)
    out = tmp_path / "grads.pt"
    tests_dir = os.path.dirname(__file__)
    proc = _torchrun([str(tmp_path / "worker.py"), str(out), tests_dir], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_grads = torch.load(out, weights_only=True)

    data = _data()
    raw = _net()
    opt = torch.optim.AdamW(raw.parameters())
    total = {n: torch.zeros_like(p) for n, p in raw.named_parameters()}
    for rank in (0, 1):
        info = DistInfo(rank=rank, world_size=2)
        sampler = ResumableSampler(data, info, seed=SEED)
        sampler.set_epoch(0)
        indices = list(sampler)[: BATCH // 2]
        batch = default_collate([data[i] for i in indices])
        g = torch.Generator().manual_seed(step_seed(SEED, rank, 0))
        loss_fn = NoisyAmbientLoss(data.family)
        _, _, ok = train_step(
            raw, loss_fn, batch, family=data.family, optimizer=opt, generator=g, info=DistInfo(), update=False
        )
        assert ok
        for n, p in raw.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, n
            total[n] += p.grad / 2
    assert ddp_grads.keys() == total.keys()
    for n in total:
        scale = total[n].abs().max().item()  # float32 sums in another order: agree to ~1e-6 relative
        torch.testing.assert_close(ddp_grads[n], total[n], rtol=0, atol=2e-5 * scale, msg=n)


def test_torchrun_cli_training_completes(tmp_path):
    data = _data()
    save_measurements(tmp_path / "train.h5", data.y, data.params, data.family)
    args = [
        "-m", "ambient_science.cli", "train",
        "--data", "train.h5", "--out-dir", "run", "--device", "cpu", "--steps", "4",
        "--set", "train.batch_size=8", "--set", "train.checkpoint_every=2", "--set", "train.log_every=2",
        "--set", "train.progress=false", "--set", "network.model_channels=8",
        "--set", "network.channel_mult=[1, 2]", "--set", "network.attn_levels=[1]",
    ]  # fmt: skip
    proc = _torchrun(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "checkpoints" / "latest").read_text().strip() == "checkpoint-00000004"
    state = json.loads((run / "checkpoints" / "checkpoint-00000004" / "state.json").read_text())
    assert state["extra"]["world_size"] == 2 and state["extra"]["images_seen"] == 32
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4]  # rank 0 alone writes
