"""Registries of pluggable backends, one per family, filled from entry points.

Built-in backends are registered through the same entry-point groups as third-party
ones (``memos.vector_indexes``, ``memos.embedders``, ``memos.runtimes``,
``memos.policies``); they are loaded lazily, once, by name.

A backend brings its own settings model as its ``Settings`` class attribute (pydantic,
``extra="forbid"``); :func:`configure` validates what it is given against it, so a
misspelt or misplaced setting is an error naming the field and the backend.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from memos.errors import ConfigError

GROUPS = ("memos.vector_indexes", "memos.embedders", "memos.runtimes", "memos.policies")

#: what a backend of each group is called in messages
_KINDS = {
    "memos.vector_indexes": "vector index",
    "memos.embedders": "embedder",
    "memos.runtimes": "runtime",
    "memos.policies": "policy",
}


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


def settings_model(group: str, name: str) -> type[BaseModel] | None:
    """The settings model backend ``name`` declares (``None``: a plugin without one)."""
    model = getattr(load(group, name), "Settings", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def configure(
    group: str, name: str, values: Mapping[str, Any], *, keys: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``values`` validated by backend ``name``'s settings model: the keyword arguments to
    build it with (its defaults filled in). ``keys`` maps a field to the name the user
    wrote it under (``api_key`` -> ``vector_api_key``), for the message."""
    model = settings_model(group, name)
    if model is None:
        return dict(values)
    try:
        return model.model_validate(dict(values)).model_dump()
    except ValidationError as exc:
        raise ConfigError(describe(exc, group, name, model, keys)) from exc


def describe(
    exc: ValidationError, group: str, name: str, model: type[BaseModel], keys: Mapping[str, str] | None = None
) -> str:
    """One line naming each bad field and the backend."""
    kind = _KINDS.get(group, group)
    shown = keys or {}
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        label = shown.get(field, field)
        if err["type"] == "extra_forbidden":
            known = ", ".join(shown.get(f, f) for f in model.model_fields) or "none"
            problems.append(f"{label!r} is not a setting of the {name} {kind} (its settings: {known})")
        else:
            problems.append(f"{label!r} of the {name} {kind}: {err['msg']}")
    return "; ".join(problems)
