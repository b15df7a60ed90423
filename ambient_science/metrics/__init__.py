"""Metrics: MRI (fastMRI definitions) in ``metrics.mri``, black-hole imaging in ``metrics.eht``."""
