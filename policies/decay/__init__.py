"""decay: active memories that stay cold for long are archived.

A memory is archived when both hold: it has not been added or returned by a search for
``after`` (idle time), and its heat (the heat policy's score) is below ``below_heat``.
Archived memories leave default search, stay searchable with ``include_archived=True``,
and ``restore`` brings them back. Off by default (``after = null``); with ``after`` set,
the default threshold 0.5 spares memories of importance 1 (their heat never drops below
0.5 with the heat defaults) and memories in regular use; an unused memory of importance
0.5 drops below it after about a year idle (the heat half-life is 180 days): raise
``below_heat`` to archive sooner.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from memos.policies.base import Action, Archive, CubeView, Duration, Policy, PolicySettings, format_duration
from memos.types import AuditEvent, MemoryType


class DecaySettings(PolicySettings):
    after: Duration | None = Field(None, description="idle time before a cold memory is archived (null: off)")
    below_heat: float = Field(0.5, ge=0, description="archived only if its heat is below this")
    types: list[MemoryType] | None = Field(None, description="the types it applies to (null: every type)")


class DecayPolicy(Policy):
    name: ClassVar[str] = "decay"
    Settings: ClassVar[type[PolicySettings]] = DecaySettings
    order: ClassVar[int] = 20

    def decide(
        self, view: CubeView, events: Sequence[AuditEvent], now: datetime, settings: Any
    ) -> list[Action]:
        assert isinstance(settings, DecaySettings)
        if settings.after is None:
            return []
        types = {str(t) for t in settings.types} if settings.types is not None else None
        return [
            Archive(
                m.id,
                f"idle for {format_duration(settings.after)} or more with heat {m.heat:.3f} "
                f"< {settings.below_heat:g}",
            )
            for m in view.active
            if (types is None or m.type in types)
            and now - m.last_touched >= settings.after
            and m.heat < settings.below_heat
        ]
