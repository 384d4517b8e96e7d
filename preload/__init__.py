"""preload: runtime security from inside the container."""

__version__ = "0.1.0"
