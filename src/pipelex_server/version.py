"""The installed pipelex-server version (its own module, so the app and routes need not import the package root)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pipelex-server")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
