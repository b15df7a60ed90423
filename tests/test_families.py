"""The operator-family contract, over every registered family (tests/conftest.py)."""

import json

import numpy as np
import pytest
import torch

from ambient_science.family import check_subset
from ambient_science.registry import family_from_config
from conftest import FAMILIES

NAMES = sorted(FAMILIES)


@pytest.mark.parametrize("name", NAMES)
def test_further_corruption_observes_a_subset(name):
    family = FAMILIES[name]()
    g = torch.Generator().manual_seed(0)
    A = family.sample(4, generator=g)
    A_tilde = family.further_corrupt(A, generator=g)
    check_subset(A, A_tilde)
    # and A~ = B A with B the 0/1 selection A~ keeps
    x = torch.randn(A.ishape, generator=g).to(family.image_dtype())
    torch.testing.assert_close(A_tilde(x), torch.broadcast_to(A_tilde.observed, A.oshape) * A(x))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_draw(name):
    family = FAMILIES[name]()

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        A = family.sample(3, generator=g)
        return A.observed, family.further_corrupt(A, generator=g).observed

    a, b, c = draw(7), draw(7), draw(8)
    torch.testing.assert_close(a, b)
    if name != "clean":
        assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("name", NAMES)
def test_global_rng_untouched(name):
    family = FAMILIES[name]()
    torch.manual_seed(99)
    np.random.seed(99)
    t_state, n_state = torch.get_rng_state(), np.random.get_state()
    g = torch.Generator().manual_seed(0)
    A = family.sample(2, generator=g)
    family.conditioning(family.further_corrupt(A, generator=g))
    assert torch.equal(torch.get_rng_state(), t_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:2], n_state[1:2]))


@pytest.mark.parametrize("name", NAMES)
def test_conditioning_shape_and_config_round_trip(name):
    family = FAMILIES[name]()
    A = family.sample(2, generator=torch.Generator().manual_seed(0))
    c = family.conditioning(A)
    _, H, W = family.image_shape
    assert c.shape == (2, family.conditioning_channels, H, W)
    assert not c.is_complex()
    config = json.loads(json.dumps(family.config()))
    rebuilt = family_from_config(config)
    assert rebuilt.config() == family.config()
    A2 = rebuilt.make(A.params())
    torch.testing.assert_close(A2.observed, A.observed)


def test_unknown_family_and_bad_config_give_clear_errors():
    with pytest.raises(ValueError, match="unknown operator family 'nope'"):
        family_from_config({"family": "nope"})
    with pytest.raises(ValueError, match="invalid config for operator family 'pixel_mask'"):
        family_from_config({"family": "pixel_mask", "image_shape": [1, 4, 4], "p": 0.5, "typo": 1})
