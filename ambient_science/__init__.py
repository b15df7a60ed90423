"""ambient-science: diffusion priors trained from corrupted measurements only, and posterior sampling.

Subpackages: ``ambient_science.operators`` (forward models and their families) and
``ambient_science.datasets`` (file formats, synthetic data). Core modules: ``linop`` (operator algebra),
``family`` (the operator-family interface), ``channels`` (complex <-> real channels), ``testing``
(property checks).
"""

from ambient_science.family import OperatorFamily
from ambient_science.linop import LinearOperator, SubsampledOperator, conjugate_gradient

__version__ = "0.1.0"

__all__ = ["LinearOperator", "OperatorFamily", "SubsampledOperator", "__version__", "conjugate_gradient"]
