"""Mask samplers: fastMRI semantics over many draws, 2-D masks, further corruption, explicit generators."""

import numpy as np
import pytest
import torch

from ambient_science.operators.mri_masks import (
    acs_slice,
    acs_width,
    drop_columns,
    drop_points,
    equispaced_column_mask,
    poisson_disc_mask,
    random_column_mask,
    variable_density_mask,
)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_acs_band_follows_fastmri_rule():
    assert acs_width(320, 0.08) == 26 and acs_width(368, 0.04) == 15
    assert acs_slice(320, 0.08) == slice(147, 173)  # (320 - 26 + 1) // 2 = 147
    s = acs_slice(64, 0.08)
    assert s.start <= 32 < s.stop  # contains the DC column W // 2


@pytest.mark.parametrize("sampler", [random_column_mask, equispaced_column_mask])
@pytest.mark.parametrize(("R", "cf", "W"), [(4, 0.08, 368), (8, 0.04, 368), (4, 0.08, 320), (8, 0.04, 64)])
def test_column_mask_statistics(sampler, R, cf, W):
    masks = sampler(2000, W, R, cf, generator=_g(R))
    assert masks.shape == (2000, W) and masks.dtype == torch.float32
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert bool((masks[:, acs_slice(W, cf)] == 1).all())  # centre columns exact
    mean_acc = W / float(masks.sum(dim=1).mean())
    assert abs(mean_acc - R) / R < 0.1
    assert len({tuple(m.tolist()) for m in masks[:50]}) > 1  # masks vary


def test_equispaced_columns_are_evenly_spaced():
    spacing = 4 * (320 - 26) / (320 - 4 * 26)  # n_acs + (W - n_acs) / s = W / R
    for m in equispaced_column_mask(8, 320, 4, 0.08, generator=_g()):
        left = torch.nonzero(m[: acs_slice(320, 0.08).start]).flatten()
        gaps = set(left.diff().tolist())
        assert gaps <= {int(np.floor(spacing)), int(np.ceil(spacing))}


def test_masks_are_reproducible_and_leave_global_rng_alone():
    torch.manual_seed(5)
    np.random.seed(5)
    t_state, n_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = random_column_mask(4, 64, 4, 0.08, generator=_g(3))
    b = random_column_mask(4, 64, 4, 0.08, generator=_g(3))
    variable_density_mask(2, (16, 16), 4, 0.125, generator=_g(3))
    drop_columns(a, 0.3, 0.08, generator=_g(4))
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), t_state)
    assert np.array_equal(np.random.get_state()[1], n_state)


def test_drop_columns_never_drops_acs():
    masks = random_column_mask(64, 96, 3, 0.1, generator=_g())
    kept = drop_columns(masks, 0.6, 0.1, generator=_g(1))
    assert bool((kept <= masks).all())
    assert bool((kept[:, acs_slice(96, 0.1)] == 1).all())
    assert float(kept.sum()) < float(masks.sum())
    with pytest.raises(ValueError, match="drop_fraction"):
        drop_columns(masks, 1.0, 0.1, generator=_g())


def test_variable_density_and_drop_points():
    m = variable_density_mask(200, (32, 32), 4, 0.125, generator=_g())
    assert abs(32 * 32 / float(m.sum(dim=(1, 2)).mean()) - 4) / 4 < 0.1
    assert bool((m[:, 14:18, 14:18] == 1).all())
    centre, edge = m[:, 12:20, 12:20].mean(), m[:, :4, :4].mean()
    assert centre > edge  # denser at the centre
    kept = drop_points(m[:4], 0.5, 0.125, generator=_g(1))
    assert bool((kept <= m[:4]).all()) and bool((kept[:, 14:18, 14:18] == 1).all())


def test_poisson_disc_mask_via_sigpy():
    m = poisson_disc_mask(2, (32, 32), 4, 0.125, generator=_g())
    assert m.shape == (2, 32, 32)
    assert bool((m[:, 14:18, 14:18] == 1).all())
    assert abs(32 * 32 / float(m[0].sum()) - 4) < 1.0
    assert not torch.equal(m[0], m[1])
    torch.testing.assert_close(m, poisson_disc_mask(2, (32, 32), 4, 0.125, generator=_g()))
