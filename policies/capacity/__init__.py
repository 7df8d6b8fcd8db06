"""capacity: a cap on a cube's active memories; over it, the coldest are archived.

When a cube has more than ``max_active`` active memories, the excess is archived in
this order: first episodes already covered by a live derived memory (a fact or summary
whose provenance names them: what they said survives in it), then everything else;
within each group the lowest heat first, then the oldest. Types in ``keep_types`` are
never archived by it (and do not count towards the cap). Off by default
(``max_active = null``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from memos.policies.base import Action, Archive, CubeView, Policy, PolicySettings
from memos.types import AuditEvent, MemoryType


class CapacitySettings(PolicySettings):
    max_active: int | None = Field(None, ge=0, description="active memories a cube may hold (null: no cap)")
    keep_types: list[MemoryType] = Field(
        default_factory=list, description="types it never archives, outside the cap"
    )


class CapacityPolicy(Policy):
    name: ClassVar[str] = "capacity"
    Settings: ClassVar[type[PolicySettings]] = CapacitySettings
    order: ClassVar[int] = 30

    def decide(
        self, view: CubeView, events: Sequence[AuditEvent], now: datetime, settings: Any
    ) -> list[Action]:
        assert isinstance(settings, CapacitySettings)
        if settings.max_active is None:
            return []
        keep = {str(t) for t in settings.keep_types}
        candidates = [m for m in view.active if m.type not in keep]
        over = len(candidates) - settings.max_active
        if over <= 0:
            return []
        covered = view.covered
        candidates.sort(
            key=lambda m: (not (m.type == "episode" and m.id in covered), m.heat, m.recorded_at, m.id)
        )
        cap = f"{len(candidates)} active > cap {settings.max_active}"
        return [
            Archive(
                m.id,
                f"{cap}: covered by a derived memory, heat {m.heat:.3f}"
                if m.type == "episode" and m.id in covered
                else f"{cap}: heat {m.heat:.3f}",
            )
            for m in candidates[:over]
        ]
