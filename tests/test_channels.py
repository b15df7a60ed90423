import pytest
import torch

from ambient_science.channels import channels_to_complex, complex_to_channels


def test_round_trip_and_layout():
    z = torch.randn(2, 3, 4, 5, dtype=torch.complex64)
    x = complex_to_channels(z)
    assert x.shape == (2, 6, 4, 5)
    torch.testing.assert_close(x[:, 2], z[:, 1].real)
    torch.testing.assert_close(x[:, 3], z[:, 1].imag)
    assert torch.equal(channels_to_complex(x), z)


def test_errors():
    with pytest.raises(TypeError):
        complex_to_channels(torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="even"):
        channels_to_complex(torch.zeros(1, 3, 2, 2))
