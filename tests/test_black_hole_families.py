"""The broad black-hole generator (datasets.black_hole_families) and its broad training records."""

import pytest
import torch

from ambient_science.datasets.black_hole_families import (
    FAMILIES,
    BroadImageConfig,
    sample_family_images,
    split_config,
)


def _draw(n=24, **kw):
    cfg = BroadImageConfig(npix=32, fov_uas=160.0, **kw)
    return sample_family_images(n, cfg, generator=torch.Generator().manual_seed(3))


def test_images_flux_positive_and_reproducible():
    x, p = _draw()
    assert x.shape == (24, 1, 32, 32) and torch.isfinite(x).all() and (x >= 0).all()
    assert torch.allclose(x.sum((1, 2, 3)), p["flux_jy"], rtol=1e-4)
    x2, _ = _draw()
    assert torch.equal(x, x2)
    assert set(p) >= {"family", "diameter_uas", "pa_deg", "textured", "flux_jy"}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_draws(family):
    x, p = _draw(8, family_probs={family: 1.0})
    assert (p["family"] == FAMILIES.index(family)).all() and torch.isfinite(x).all()


def test_splits_hold_families_out():
    train = split_config("both", "train")
    assert train.texture_prob == 0 and "double_ring" not in train.family_probs
    _, p = sample_family_images(64, split_config("texture", "test", BroadImageConfig(npix=16)),
                                generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert (p["textured"] == 1).all()
    _, p = sample_family_images(16, split_config("double_ring", "test", BroadImageConfig(npix=16)),
                                generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert (p["family"] == FAMILIES.index("double_ring")).all() and (p["textured"] == 0).all()
    with pytest.raises(ValueError, match="split"):
        split_config("jets", "test")


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="family_probs"):
        BroadImageConfig(family_probs={"torus": 1.0})
    with pytest.raises(ValueError, match="diameter_uas"):
        BroadImageConfig(diameter_uas=(50.0, 10.0))


def test_broad_records_merge_arrays_at_training_flux():
    from ambient_science.pipelines.eht import broad_training_records

    ds = broad_training_records(8, 32, 160.0, seed=0, chunk=4)
    assert ds.y.shape[0] == 8 and ds.family.max_vis == ds.y.shape[1]
    assert int(ds.params["t1"].max()) < len(ds.family.table)
    assert torch.isfinite(ds.sigma_n).all() and (ds.sigma_n > 0).all()
    A = ds.family.make(ds.params)
    assert ((ds.y.abs() > 0) <= (A.observed > 0)).all()
