"""Noise schedules: EDM's ρ-spacing (Karras et al. 2022, eq. 5) and the geometric limit."""

from __future__ import annotations

import math

import pytest
import torch

from ambient_science.schedules import append_zero, edm_sigmas, geometric_sigmas


def test_edm_sigmas_end_points_shape_and_order():
    s = edm_sigmas(18)
    assert s.shape == (19,) and s.dtype == torch.float64
    assert float(s[0]) == 80.0 and float(s[-2]) == 0.002 and float(s[-1]) == 0.0
    assert bool((s[1:] < s[:-1]).all())


def test_edm_sigmas_formula():
    N, smin, smax, rho = 10, 0.01, 20.0, 7.0
    s = edm_sigmas(N, sigma_min=smin, sigma_max=smax, rho=rho)
    for i in range(N):
        expected = (smax ** (1 / rho) + i / (N - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
        assert math.isclose(float(s[i]), expected, rel_tol=1e-12)


def test_rho_one_is_linear_and_large_rho_tends_to_geometric():
    lin = edm_sigmas(5, sigma_min=1.0, sigma_max=5.0, rho=1.0)
    assert torch.allclose(lin[:-1], torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))
    geo = geometric_sigmas(6, sigma_min=0.01, sigma_max=10.0)
    ratios = geo[1:-1] / geo[:-2]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))
    assert torch.allclose(edm_sigmas(6, sigma_min=0.01, sigma_max=10.0, rho=1e4), geo, rtol=1e-3)


def test_single_step_and_dtype_device():
    s = edm_sigmas(1, sigma_max=3.0, dtype=torch.float32, device=torch.device("cpu"))
    assert s.tolist() == [3.0, 0.0] and s.dtype == torch.float32
    assert append_zero(torch.tensor([2.0, 1.0])).tolist() == [2.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_steps=0), dict(num_steps=5, sigma_min=0.0), dict(num_steps=5, sigma_min=2.0, sigma_max=1.0),
     dict(num_steps=5, rho=0.0), dict(num_steps=5, sigma_max=float("inf"))],
)  # fmt: skip
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        edm_sigmas(**kwargs)
