"""Adjoint, linearity and normal-operator checks over every registered operator (tests/conftest.py)."""

import pytest
import torch

from ambient_science.testing import check_adjoint, check_linearity, check_normal
from conftest import OPERATORS

CASES = [(name, dtype) for name, (_, dtypes) in OPERATORS.items() for dtype in dtypes]


@pytest.mark.parametrize(("name", "dtype"), CASES, ids=[f"{n}-{str(d)[6:]}" for n, d in CASES])
def test_adjoint(name, dtype):
    A = OPERATORS[name][0]()
    assert check_adjoint(A, dtype) < 1e-5


@pytest.mark.parametrize(("name", "dtype"), CASES, ids=[f"{n}-{str(d)[6:]}" for n, d in CASES])
def test_linearity(name, dtype):
    assert check_linearity(OPERATORS[name][0](), dtype) < 1e-5


@pytest.mark.parametrize(("name", "dtype"), CASES, ids=[f"{n}-{str(d)[6:]}" for n, d in CASES])
def test_normal(name, dtype):
    assert check_normal(OPERATORS[name][0](), dtype) < 1e-5


def test_adjoint_check_detects_a_wrong_adjoint():
    """The checker itself can fail: an operator whose adjoint forgets the conjugate."""
    from ambient_science.linop import LinearOperator

    class Wrong(LinearOperator):
        def _forward(self, x):
            return (1 + 2j) * x

        def _adjoint(self, y):
            return (1 + 2j) * y

    assert check_adjoint(Wrong((1, 1, 4, 4), (1, 1, 4, 4)), torch.complex64) > 0.1
