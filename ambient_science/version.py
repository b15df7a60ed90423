"""The package version (one place; ``ambient_science.__version__`` re-exports it)."""

__version__ = "0.1.0"
