"""The package version, in a module of its own: io.py records it in every checkpoint without
importing the package root (whose names import modules that import io.py)."""

__version__ = "0.1.0"
