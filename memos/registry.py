"""Registries of pluggable backends, one per family, filled from entry points.

Built-in backends are registered through the same entry-point groups as third-party
ones (``memos.vector_indexes``, ``memos.embedders``, ``memos.runtimes``,
``memos.policies``); they are loaded lazily, once, by name.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

from memos.errors import ConfigError

GROUPS = ("memos.vector_indexes", "memos.embedders", "memos.runtimes", "memos.policies")


@functools.cache
def _names(group: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=group)}


def available(group: str) -> list[str]:
    """Names registered in ``group``."""
    return sorted(_names(group))


def load(group: str, name: str) -> Any:
    """The object registered as ``name`` in ``group`` (imported on first use)."""
    if group not in GROUPS:
        raise ConfigError(f"unknown plugin group {group!r}; known: {', '.join(GROUPS)}")
    eps = _names(group)
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise ConfigError(f"no {group.split('.')[-1]} backend named {name!r}; available: {known}")
    return eps[name].load()
