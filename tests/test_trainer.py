"""The trainer: exact resume, non-finite guard, warm-up, EMA, outputs; all on CPU with tiny networks."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from ambient_science.datasets.measurements import MeasurementDataset
from ambient_science.ema import EMA
from ambient_science.operators import PixelMaskFamily
from ambient_science.pipelines.training import train
from ambient_science.training.checkpoint import CheckpointError, load_checkpoint
from ambient_science.training.config import RunConfig, TrainConfig
from ambient_science.training.trainer import NonFiniteError, learning_rate

NETWORK = {"model_channels": 8, "channel_mult": [1, 2], "attn_levels": [1], "num_blocks": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


def _dataset(n: int = 24, *, is_complex: bool = False, sigma_n: float = 0.0) -> MeasurementDataset:
    family = PixelMaskFamily((1, 8, 8), p=0.4, delta=0.2, is_complex=is_complex)
    g = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(n, 1, 8, 8, generator=g)
    if is_complex:
        x = torch.complex(x, 0.5 * torch.randn(n, 1, 8, 8, generator=g))
    A = family.sample(n, generator=g)
    y = A(x)
    if sigma_n:
        y = y + sigma_n * A(torch.randn(n, 1, 8, 8, generator=g).to(y.dtype))
    return MeasurementDataset(y, A.params(), family, sigma_n=sigma_n)


def _config(out_dir, **train) -> RunConfig:
    base = dict(
        out_dir=str(out_dir),
        steps=8,
        batch_size=4,
        warmup_images=8,
        ema_halflife_images=16,
        checkpoint_every=3,
        log_every=2,
        device="cpu",
        progress=False,
    )
    return RunConfig(network={**NETWORK, "dropout": 0.1}, train=TrainConfig(**{**base, **train}))


def test_learning_rate_warmup_and_ema_half_life():
    cfg = TrainConfig(lr=1e-3, warmup_images=100)
    assert learning_rate(cfg, 50) == pytest.approx(5e-4) and learning_rate(cfg, 500) == pytest.approx(1e-3)
    ema = EMA(torch.nn.Linear(1, 1), half_life_images=1000, rampup=None)
    beta = ema.beta(images_seen=10_000, batch_images=10)
    assert beta**100 == pytest.approx(0.5)  # after 1000 images an update's weight has halved
    assert EMA(torch.nn.Linear(1, 1), 1000, rampup=0.1).beta(100, 10) == pytest.approx(0.5)  # h_t = 10


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_weights(tmp_path):
    """A run killed after step 4 (last checkpoint at step 3), resumed, ends where an uninterrupted run ends:
    same model, EMA and optimizer state (across an epoch boundary, with dropout on)."""
    data = _dataset(24)  # 6 steps per epoch
    whole = train(_config(tmp_path / "whole"), data)

    def kill(step, metrics):
        if step == 4:
            raise _Killed

    with pytest.raises(_Killed):
        train(_config(tmp_path / "killed"), data, callback=kill)
    resumed = train(_config(tmp_path / "killed", resume="auto"), data)
    assert resumed.step == whole.step == 8 and resumed.images_seen == 32
    for name in ("model", "ema"):
        a = load_file(whole.checkpoint / f"{name}.safetensors")
        b = load_file(resumed.checkpoint / f"{name}.safetensors")
        assert a.keys() == b.keys()
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        assert diff <= 1e-6, (name, diff)
    opt_a = torch.load(whole.checkpoint / "optimizer.pt", weights_only=True)["state"]
    opt_b = torch.load(resumed.checkpoint / "optimizer.pt", weights_only=True)["state"]
    assert all(torch.allclose(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"], rtol=0, atol=1e-9) for i in opt_a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]  # the killed run's step-4 line was dropped and rewritten once


def test_outputs_global_rng_and_refusal_to_overwrite(tmp_path):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    result = train(_config(tmp_path, steps=4, sample_every=4, sample_count=4, sample_steps=3), _dataset(16))
    assert torch.equal(torch.get_rng_state(), state), "training must not touch torch's global RNG"
    assert (tmp_path / "samples" / "step-00000004.png").is_file()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4] and all(math.isfinite(r["loss"]) for r in records)
    prior = load_checkpoint(tmp_path)
    assert prior.step == 4 and prior.family.config()["delta"] == 0.2
    assert prior.config["network"]["cond_channels"] == 1 and prior.config["loss"]["sigma_data"] == 0.5
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        train(_config(tmp_path, steps=4), _dataset(16))
    assert result.checkpoint == tmp_path / "checkpoints" / "checkpoint-00000004"


def test_resume_from_a_corrupt_checkpoint_names_it(tmp_path):
    train(_config(tmp_path, steps=3, checkpoint_every=0), _dataset(16))
    model = tmp_path / "checkpoints" / "checkpoint-00000003" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="checkpoint-00000003"):
        train(_config(tmp_path, steps=6, resume="auto"), _dataset(16))


class _Poisoned(MeasurementDataset):
    """Records whose index is in ``bad`` carry NaN measurements (bypassing the dataset's own check)."""

    bad: frozenset = frozenset()

    def __getitem__(self, i):
        record = super().__getitem__(i)
        if i in self.bad:
            record = {**record, "y": torch.full_like(record["y"], float("nan"))}
        return record


def test_non_finite_steps_are_skipped_counted_and_abort_after_the_limit(tmp_path):
    data = _dataset(16)
    poisoned = _Poisoned(data.y, data.params, data.family)
    poisoned.bad = frozenset({0})  # one batch in four per epoch
    result = train(_config(tmp_path / "a", steps=8, max_nonfinite=5), poisoned)
    assert result.skipped_steps == 2  # record 0 appears once per epoch, two epochs
    assert all(torch.isfinite(p).all() for p in result.network.parameters())
    assert all(torch.isfinite(p).all() for p in result.ema.module.parameters())
    poisoned.bad = frozenset(range(16))
    with pytest.raises(NonFiniteError, match=r"3 steps with a non-finite loss.*max_nonfinite = 2"):
        train(_config(tmp_path / "b", steps=8, max_nonfinite=2), poisoned)


def test_complex_images_with_known_noise(tmp_path):
    """MRI-like: complex images (2 network channels) and σ_n > 0 (the noisy ambient loss)."""
    result = train(_config(tmp_path, steps=3), _dataset(16, is_complex=True, sigma_n=0.05))
    assert result.config["network"]["img_channels"] == 2 and result.step == 3


def test_compiled_gradient_check_keeps_a_faithful_model_and_drops_a_wrong_one():
    """``--compile`` is checked on the first batch: gradients that differ from the eager ones (inductor's CPU
    backward of this U-Net is 10-50 % off on torch 2.13) send training back to the eager model, with a warning.
    A stand-in for a miscompiled model: the same network with its output scaled by 1.2."""
    from torch import nn

    from ambient_science.network import UNetConfig, build_network
    from ambient_science.training.distributed import DistInfo
    from ambient_science.training.losses import LossConfig, build_loss
    from ambient_science.training.trainer import _checked_compile, compiled_gradient_error

    family = PixelMaskFamily((1, 8, 8), p=0.5)
    net = build_network(UNetConfig(img_channels=1, cond_channels=family.conditioning_channels, model_channels=8,
                                   channel_mult=(1, 2), attn_levels=(), dropout=0.1))  # fmt: skip
    g = torch.Generator().manual_seed(0)
    A = family.sample(4, generator=g)
    batch = {"y": A(torch.rand(4, 1, 8, 8, generator=g)), "params": A.params(), "sigma_n": torch.zeros(4)}
    loss_fn = build_loss(LossConfig(kind="auto"), family, 0.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]

    class Scaled(nn.Module):
        def __init__(self, scale: float = 1.2):
            super().__init__()
            self.scale = scale

        def forward(self, *args, **kwargs):
            return self.scale * net(*args, **kwargs)

    info = DistInfo(device=torch.device("cpu"))
    assert compiled_gradient_error(net, net, loss_fn, batch, family, opt, info) < 1e-6  # dropout off: reproducible
    assert compiled_gradient_error(Scaled(), net, loss_fn, batch, family, opt, info) > 0.1
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # the perturbation is undone

    cfg = TrainConfig(bf16=False)
    faithful = Scaled(1.0)  # a module other than net computing the same: what the trainer would call the compiled one
    assert _checked_compile(faithful, net, loss_fn, batch, family, opt, info, cfg) is faithful
    with pytest.warns(RuntimeWarning, match="torch.compile changed the gradients"):
        assert _checked_compile(Scaled(), net, loss_fn, batch, family, opt, info, cfg) is net
