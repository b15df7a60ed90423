"""A two-second tour of the operator algebra: draw masks, corrupt them further, check adjoints.

Run: ``python examples/operators_tour.py``. Shows the ``OperatorFamily`` interface every family of
ambient-science implements (pixel masks here), and the property checks shipped in
``ambient_science.testing``.
"""

import torch

from ambient_science.operators import PixelMaskFamily
from ambient_science.testing import check_adjoint, check_linearity, check_normal


def main() -> None:
    g = torch.Generator().manual_seed(0)
    family = PixelMaskFamily(image_shape=(1, 32, 32), p=0.6, delta=0.2)
    A = family.sample(8, generator=g)  # the measurement operators y = A x
    A_tilde = family.further_corrupt(A, generator=g)  # Ã = B A: a random subset of what A saw
    print(f"A observes {A.num_observed().mean():.0f} of 1024 pixels; Ã keeps {A_tilde.num_observed().mean():.0f}")
    print(f"conditioning c(Ã): {tuple(family.conditioning(A_tilde).shape)}")
    for dtype in (torch.float32, torch.complex64):
        print(
            f"{dtype!s:16s} adjoint {check_adjoint(A, dtype):.1e}  linearity {check_linearity(A, dtype):.1e}"
            f"  normal {check_normal(A, dtype):.1e}"
        )


if __name__ == "__main__":
    main()
