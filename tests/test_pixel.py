"""Pixel-mask operators and samplers."""

import pytest
import torch

from ambient_science.operators import PixelMask, PixelMaskFamily, bernoulli_mask, box_mask


def test_bernoulli_mask_hide_fraction():
    m = bernoulli_mask(64, (1, 32, 32), 0.7, generator=torch.Generator().manual_seed(0))
    assert abs(1 - m.mean().item() - 0.7) < 0.01


def test_box_mask_hides_exactly_one_box():
    m = box_mask(16, 20, 24, 5, generator=torch.Generator().manual_seed(0))
    assert m.shape == (16, 1, 20, 24)
    assert torch.all((1 - m).sum(dim=(1, 2, 3)) == 25)


def test_further_corruption_hides_delta_of_observed():
    family = PixelMaskFamily((1, 64, 64), p=0.5, delta=0.25)
    g = torch.Generator().manual_seed(0)
    A = family.sample(32, generator=g)
    A_tilde = family.further_corrupt(A, generator=g)
    frac_kept = A_tilde.mask.sum() / A.mask.sum()
    assert abs(frac_kept.item() - 0.75) < 0.01


def test_mask_of_wrong_shape_is_refused_with_expected_shape():
    with pytest.raises(ValueError, match=r"expected \(B, 1, 8, 8\) or \(B, 3, 8, 8\)"):
        PixelMask(torch.ones(2, 1, 8, 9), image_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="finite"):
        PixelMask(torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match=r"\(B, 1 or C, H, W\)"):
        PixelMask(torch.ones(4, 4))


def test_bad_probabilities_refused():
    with pytest.raises(ValueError, match="hide probability"):
        PixelMaskFamily((1, 8, 8), p=1.0)
    with pytest.raises(ValueError, match="delta"):
        PixelMaskFamily((1, 8, 8), p=0.5, delta=-0.1)
