"""Config values are checked by type and range, by file, by ``--set`` and in Python, with a message naming
the key, the value and what is allowed (issue #16, item 1: ``compile = "no"`` used to turn torch.compile ON)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ambient_science.cli import main
from ambient_science.training.config import (
    RunConfig,
    TrainConfig,
    apply_overrides,
    load_config_file,
    run_config_from_dict,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"compile": "no"}, r"train\.compile must be true or false, got 'no' \(a string\)"),
        ({"bf16": "false"}, r"train\.bf16 must be true or false, got 'false'"),
        ({"progress": 1}, r"train\.progress must be true or false, got 1"),
        ({"steps": "ten"}, r"train\.steps must be an integer, got 'ten'"),
        ({"steps": 3.7}, r"train\.steps must be an integer, got 3\.7"),
        ({"steps": True}, r"train\.steps must be an integer, got True"),
        ({"steps": 0}, r"train\.steps must be an integer with a value >= 1, got 0"),
        ({"lr": float("nan")}, r"train\.lr must be a finite number"),
        ({"lr": 0.0}, r"train\.lr .* > 0"),
        ({"adam_betas": (0.9,)}, r"train\.adam_betas must be a list of 2"),
        ({"adam_betas": (0.9, 1.5)}, r"train\.adam_betas .* <= 1"),
        ({"max_minutes": -1.0}, r"train\.max_minutes .* >= 0"),
        ({"out_dir": 3}, r"train\.out_dir must be a string"),
    ],
)
def test_train_config_rejects_wrong_types_and_ranges(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**values)
    with pytest.raises(ValueError, match=message):  # the same through a config dict
        run_config_from_dict({"train": {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}})


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("network", {"model_channels": 8.5}, r"network\.model_channels must be an integer, got 8\.5"),
        ("network", {"channel_mult": [1, 0]}, r"network\.channel_mult .* >= 1"),
        ("network", {"channel_mult": "12"}, r"network\.channel_mult must be a list of integers"),
        ("network", {"mid_attention": "yes"}, r"network\.mid_attention must be true or false"),
        ("network", {"kind": "cnn"}, r"network\.kind must be one of \['mlp', 'unet'\]"),
        ("network", {"dropout": 1.5}, r"network\.dropout .* <= 1"),
        ("loss", {"p_mean": "x"}, r"loss\.p_mean must be a finite number"),
        ("loss", {"kind": "l2"}, r"loss\.kind must be one of"),
        ("data", {"path": 3}, r"data\.path must be a string"),
    ],
)
def test_other_sections_are_checked_too(section, values, message):
    with pytest.raises(ValueError, match=message):
        run_config_from_dict({section: values})


def test_good_values_pass_and_round_trip():
    cfg = run_config_from_dict(
        {"train": {"lr": 1, "ema_halflife_images": 500, "adam_betas": [0.9, 0.99], "compile": False, "steps": 4},
         "network": {"model_channels": 8, "channel_mult": [1, 2], "attn_levels": []}}
    )  # fmt: skip
    assert cfg.train.lr == 1 and cfg.train.adam_betas == (0.9, 0.99) and cfg.train.compile is False
    again = run_config_from_dict({k: v for k, v in cfg.to_dict().items()})  # a checkpoint's config reads back
    assert again == cfg
    assert dataclasses.replace(cfg.train, max_minutes=30).max_minutes == 30


def test_shipped_configs_still_parse():
    for path in sorted((ROOT / "configs").rglob("*.toml")):
        run_config_from_dict(load_config_file(path))


def test_overrides_go_through_the_same_checks(capsys):
    bad = apply_overrides({}, ["train.compile=no"])
    assert bad == {"train": {"compile": "no"}}  # a bare word stays a string: never truthy
    with pytest.raises(ValueError, match=r"train\.compile must be true or false, got 'no'"):
        run_config_from_dict(bad)
    assert run_config_from_dict(apply_overrides({}, ["train.compile=false"])).train.compile is False
    assert main(["train", "--set", "train.steps=3.7", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ambient-science train: error: train.steps must be an integer, got 3.7 (a number)"]


def test_dry_run_refuses_what_a_run_would_refuse(tmp_path, capsys):
    (tmp_path / "c.toml").write_text('[train]\ncompile = "no"\nbf16 = "false"\n')
    assert main(["train", str(tmp_path / "c.toml"), "--dry-run"]) == 2
    assert "train.bf16 must be true or false" in capsys.readouterr().err
    (tmp_path / "c.toml").write_text("[network]\nmodel_channels = 8.5\n")
    assert main(["train", str(tmp_path / "c.toml"), "--dry-run"]) == 2
    assert "network.model_channels must be an integer, got 8.5" in capsys.readouterr().err
    assert isinstance(RunConfig(), RunConfig)  # the defaults themselves are valid
