"""Data: file formats, dataset classes and synthetic generators (installed as ``ambient_science.datasets``)."""

__all__: list[str] = []
