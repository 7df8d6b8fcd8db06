"""The package's version, in a module of its own: a kernel module reads it here, never
from ``memos`` itself, whose lazy facade (``memos.core``) would close an import cycle."""

__version__ = "0.1.0"
