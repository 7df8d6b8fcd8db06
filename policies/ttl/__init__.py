"""ttl: memories that outlive their time to live expire; expired ones are purged after a grace.

A memory's ttl is the shortest of the rules that match it: its type (``types``), any of
its tags (``tags``), any of its metadata keys (``metadata``: the key is present). Its age
is counted from when it was recorded. An active or archived memory older than its ttl
becomes ``expired`` (out of every search, listed with ``--state expired``, restorable);
an expired memory whose expiry is older than ``grace`` is purged (``grace = null`` keeps
expired memories until someone purges them). No rule is set by default: nothing expires
until an operator or a cube's owner configures one, e.g. ``memos policy set CUBE
ttl.types.episode=90d``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field

from memos.policies.base import (
    Action,
    CubeView,
    Duration,
    Expire,
    MemoryView,
    Policy,
    PolicySettings,
    Purge,
    format_duration,
)
from memos.types import AuditEvent, MemoryState, MemoryType


class TtlSettings(PolicySettings):
    types: dict[MemoryType, Duration] = Field(default_factory=dict, description="ttl per memory type")
    tags: dict[str, Duration] = Field(default_factory=dict, description="ttl of memories with a tag")
    metadata: dict[str, Duration] = Field(
        default_factory=dict, description="ttl of memories with a metadata key"
    )
    grace: Duration | None = Field(timedelta(days=30), description="expired this long → purged (null: never)")


def ttl_of(m: MemoryView, settings: TtlSettings) -> tuple[timedelta, str] | None:
    """The shortest matching ttl and the rule that set it."""
    found: list[tuple[timedelta, str]] = []
    for t, ttl in settings.types.items():
        if m.type == t:
            found.append((ttl, f"type {m.type}"))
    found += [(ttl, f"tag {tag!r}") for tag, ttl in settings.tags.items() if tag in m.tags]
    found += [(ttl, f"metadata {key!r}") for key, ttl in settings.metadata.items() if key in m.metadata]
    return min(found, key=lambda f: f[0]) if found else None


class TtlPolicy(Policy):
    name: ClassVar[str] = "ttl"
    Settings: ClassVar[type[PolicySettings]] = TtlSettings
    order: ClassVar[int] = 10

    def decide(
        self, view: CubeView, events: Sequence[AuditEvent], now: datetime, settings: Any
    ) -> list[Action]:
        assert isinstance(settings, TtlSettings)
        out: list[Action] = []
        for m in view.memories:
            if m.state in (MemoryState.active, MemoryState.archived):
                rule = ttl_of(m, settings)
                if rule is not None and now - m.recorded_at >= rule[0]:
                    out.append(Expire(m.id, f"older than the ttl of {rule[1]} ({format_duration(rule[0])})"))
            elif m.state == MemoryState.expired and settings.grace is not None:
                since = m.retired_at or m.updated_at
                if now - since >= settings.grace:
                    out.append(
                        Purge(m.id, f"expired for longer than the grace of {format_duration(settings.grace)}")
                    )
        return out
