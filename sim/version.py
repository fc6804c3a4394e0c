"""The package version (one place; `sim.__version__` and the files deploysim writes read it)."""

__version__ = "0.1.0"
