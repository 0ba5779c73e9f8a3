"""The installed distribution's version (``importlib.metadata``); a fallback for a bare checkout."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("hessian-lr")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"
