"""The package version, read by ``lttk --version``."""

__version__ = "0.1.0"
