"""The package version (one place, importable without the package's lazy re-exports)."""

__version__ = "0.1.0"
