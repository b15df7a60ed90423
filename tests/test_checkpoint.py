"""Checkpoints: safetensors + JSON, atomic writes, verification, keep-last-K, loading a prior."""

import json
from pathlib import Path

import pytest
import torch

from ambient_science.ema import EMA
from ambient_science.network import UNetConfig, build_network
from ambient_science.operators import PixelMaskFamily
from ambient_science.training import checkpoint as ckpt_module
from ambient_science.training.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_for_resume,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)

NET_CFG = UNetConfig(img_channels=1, cond_channels=1, model_channels=8, channel_mult=(1, 2), attn_levels=(1,))
FAMILY = PixelMaskFamily((1, 8, 8), p=0.5, delta=0.1)


pytestmark = pytest.mark.usefixtures("one_thread")


def _objects(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(NET_CFG)
    ema = EMA(net, half_life_images=100)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(2, 1, 8, 8), torch.ones(2), torch.ones(2, 1, 8, 8)).square().sum().backward()
    opt.step()
    ema.update(net, images_seen=2, batch_images=2)
    return net, ema, opt


def _save(root: Path, step: int, net, ema, opt, **kw) -> Path:
    config = {"network": NET_CFG.to_dict(), "family": FAMILY.config(), "version": "test"}
    rng = {"train_generator": torch.Generator().manual_seed(step).get_state()}
    return save_checkpoint(root, network=net, ema=ema, optimizer=opt, step=step, rng_state=rng, config=config, **kw)


def test_round_trip_prior_and_resume(tmp_path):
    net, ema, opt = _objects()
    path = _save(tmp_path, 7, net, ema, opt, extra={"images_seen": 14})
    assert path == tmp_path / "checkpoint-00000007"
    assert (tmp_path / "latest").read_text().strip() == path.name

    prior = load_checkpoint(tmp_path)  # through `latest`
    assert prior.step == 7 and prior.family.config() == FAMILY.config() and not prior.network.training
    for (k, a), b in zip(prior.network.state_dict().items(), ema.module.state_dict().values()):
        assert torch.equal(a, b), k
    assert not any(p.requires_grad for p in prior.network.parameters())
    model = load_checkpoint(path, weights="model").network
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values()))

    net2, ema2, opt2 = _objects(seed=1)
    state = load_for_resume(path, network=net2, ema=ema2, optimizer=opt2)
    assert state.step == 7 and state.extra == {"images_seen": 14}
    assert torch.equal(state.rng_state["train_generator"], torch.Generator().manual_seed(7).get_state())
    assert all(torch.equal(a, b) for a, b in zip(net2.parameters(), net.parameters()))
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"]) for i in s1)


def test_no_pickled_code(tmp_path):
    net, ema, opt = _objects()
    path = _save(tmp_path, 1, net, ema, opt)
    torch.load(path / "optimizer.pt", weights_only=True)  # tensors and numbers only
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "ema.safetensors",
        "model.safetensors",
        "optimizer.pt",
        "rng.safetensors",
        "state.json",
    ]
    assert json.loads((path / "config.json").read_text())["family"]["family"] == "pixel_mask"


def test_truncated_checkpoint_is_a_clear_error_and_the_previous_one_is_kept(tmp_path):
    net, ema, opt = _objects()
    good = _save(tmp_path, 1, net, ema, opt)
    bad = _save(tmp_path, 2, net, ema, opt)
    data = (bad / "ema.safetensors").read_bytes()
    (bad / "ema.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint-00000002.*ema\.safetensors.*truncated") as err:
        load_checkpoint(tmp_path)
    assert "checkpoint-00000001" in str(err.value)  # the message points at the previous good one
    assert load_checkpoint(good).step == 1


def test_corrupt_bytes_and_missing_state_are_detected(tmp_path):
    net, ema, opt = _objects()
    path = _save(tmp_path, 3, net, ema, opt)
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors fails its SHA-256"):
        verify_checkpoint(path)
    (path / "state.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resolve_checkpoint(tmp_path / "nowhere")


def test_a_failed_write_leaves_the_previous_checkpoint_and_latest(tmp_path, monkeypatch):
    net, ema, opt = _objects()
    good = _save(tmp_path, 1, net, ema, opt)
    calls = {"n": 0}
    real_save = ckpt_module.save_file

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt_module, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 2, net, ema, opt)
    assert list_checkpoints(tmp_path) == [good]
    assert resolve_checkpoint(tmp_path) == good
    assert not list(tmp_path.glob(".tmp-*"))
    verify_checkpoint(good)


def test_keeps_the_last_k_and_resaving_a_step_replaces_it(tmp_path):
    net, ema, opt = _objects()
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, net, ema, opt, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000003", "checkpoint-00000004"]
    _save(tmp_path, 4, net, ema, opt, keep=2)
    verify_checkpoint(tmp_path / "checkpoint-00000004")
    assert not list(tmp_path.glob(".old-*"))


def test_weights_of_another_network_are_refused(tmp_path):
    net, ema, opt = _objects()
    path = _save(tmp_path, 1, net, ema, opt)
    other = build_network(
        UNetConfig(img_channels=1, cond_channels=1, model_channels=16, channel_mult=(1,), attn_levels=())
    )
    with pytest.raises(CheckpointError, match="does not fit"):
        load_for_resume(path, network=other, ema=EMA(other, 10), optimizer=torch.optim.AdamW(other.parameters()))
