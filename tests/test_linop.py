"""The operator algebra of ambient_science.linop."""

import pytest
import torch

from ambient_science.linop import Identity, conjugate_gradient
from ambient_science.operators import PixelMask


def test_adjoint_is_cached_and_involutive():
    A = PixelMask(torch.ones(1, 1, 4, 4))
    assert A.H is A.H
    assert A.H.H is A


def test_composition_and_scaling():
    m1 = (torch.rand(2, 1, 5, 5) > 0.5).float()
    m2 = (torch.rand(2, 1, 5, 5) > 0.5).float()
    A, B = PixelMask(m1), PixelMask(m2)
    x = torch.randn(2, 1, 5, 5, dtype=torch.complex64)
    torch.testing.assert_close((A * B)(x), m1 * m2 * x)
    torch.testing.assert_close((3j * A).H(x), -3j * m1 * x)
    torch.testing.assert_close((A * 2.0)(x), 2 * m1 * x)


def test_composition_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="cannot compose"):
        Identity((1, 1, 4, 4)) * Identity((1, 1, 4, 5))


def test_shape_check_names_operator_and_expected_shape():
    A = PixelMask(torch.ones(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"PixelMask: input has shape \(2, 1, 4, 5\), expected \(2, 1, 4, 4\)"):
        A(torch.zeros(2, 1, 4, 5))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        A(None)


def test_conjugate_gradient_solves_spd_system_per_sample():
    g = torch.Generator().manual_seed(0)
    n = 12
    M = torch.randn(3, n, n, generator=g, dtype=torch.float64)
    spd = M @ M.transpose(1, 2) + n * torch.eye(n, dtype=torch.float64)
    x_true = torch.randn(3, n, generator=g, dtype=torch.float64)
    b = (spd @ x_true[..., None])[..., 0]
    x = conjugate_gradient(lambda v: (spd @ v[..., None])[..., 0], b, max_iter=100, tol=1e-12)
    torch.testing.assert_close(x, x_true, rtol=1e-8, atol=1e-8)


def test_regularised_least_squares_matches_closed_form():
    mask = (torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    A = PixelMask(mask)
    y = A(torch.randn(2, 1, 6, 6, dtype=torch.complex64))
    x = A.solve_least_squares(y, lam=0.5, max_iter=20)
    torch.testing.assert_close(x, y / (mask + 0.5))
