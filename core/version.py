"""The installed version, from the distribution's metadata."""

from importlib import metadata

try:
    __version__ = metadata.version("tlzoo")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
