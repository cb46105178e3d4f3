"""The package's version, read from its installed metadata (``pyproject.toml`` is the one source).

Its own module, below every other: the library records the version in artifacts and runs
without importing the package root (which would close an import loop through ``gpo_vae.model``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpo-vae")
except PackageNotFoundError:  # the sources on sys.path without an install
    __version__ = "0+unknown"

__all__ = ["__version__"]
