"""The memorisation pipeline's pieces (ambient_science.pipelines.memorization) and audit.heldout_coverage."""

from __future__ import annotations

import pytest
import torch

from ambient_science.audit import heldout_coverage
from ambient_science.operators.pixel import CleanFamily, PixelMaskFamily
from ambient_science.pipelines.memorization import (
    QUICK,
    MemorizationConfig,
    family_for,
    format_table,
    make_images,
    measurement_set,
)


def test_config_rejects_bad_levels_and_budgets():
    assert QUICK.steps < MemorizationConfig().steps
    with pytest.raises(ValueError, match="hide probabilities"):
        MemorizationConfig(levels=(0.0, 1.0))
    with pytest.raises(ValueError, match="at least one batch"):
        MemorizationConfig(num_train=8, batch_size=16)


def test_images_families_and_fixed_masks():
    g = torch.Generator().manual_seed(0)
    images = make_images(6, 16, generator=g)
    assert images.shape == (6, 1, 16, 16) and images.amax() <= 1.0 and images.amin() >= -1.0
    assert isinstance(family_for(0.0, (1, 16, 16), 0.1), CleanFamily)
    family = family_for(0.8, (1, 16, 16), 0.1)
    assert isinstance(family, PixelMaskFamily)
    data = measurement_set(images, family, generator=torch.Generator().manual_seed(1))
    again = measurement_set(images, family, generator=torch.Generator().manual_seed(1))
    assert len(data) == 6 and torch.equal(data[0]["y"], again[0]["y"])  # one mask per image, drawn once
    mask = data[0]["params"]["mask"]
    assert torch.equal(data[0]["y"], mask * images[0]) and 0.05 < mask.float().mean() < 0.4


def test_heldout_coverage_is_one_for_copies_and_lower_for_noise():
    g = torch.Generator().manual_seed(2)
    heldout = torch.randn(5, 1, 8, 8, generator=g)
    assert heldout_coverage(heldout, torch.cat([heldout, torch.randn(3, 1, 8, 8, generator=g)])) == pytest.approx(1.0)
    assert heldout_coverage(heldout, torch.randn(5, 1, 8, 8, generator=g)) < 0.9


def test_format_table_lists_every_level():
    metrics = {"levels": [{"p": 0.0, "fraction_above": 0.5, "median_nn_similarity": 0.9, "quality": 0.8},
                          {"p": 0.8, "fraction_above": 0.0, "median_nn_similarity": 0.7, "quality": 0.6}]}  # fmt: skip
    lines = format_table(metrics).splitlines()
    assert len(lines) == 3 and lines[2].split() == ["0.80", "0.000", "0.700", "0.600"]
