"""tlzoo: transfer learning of image classifiers from one JSON spec.

The rooms below this package are its architecture; see README.md ("Layout").
"""

from tlzoo.version import __version__

__all__ = ["__version__"]
