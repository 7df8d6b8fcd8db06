"""capacity: caps on a cube's active memories and their tokens; over one, the coldest are archived.

A cube is over capacity when it has more than ``max_active`` active memories, or when
their estimated tokens (``Σ ⌈chars / chars_per_token⌉``: the size they take in a prompt,
a KV prefix or a training set; the estimate only chooses) exceed ``max_tokens``. Then
memories are archived in this order until both caps hold: first episodes already covered
by a live derived memory (a fact or summary whose provenance names them: what they said
survives in it), then everything else; within each group the lowest heat first, then the
oldest. Types in ``keep_types`` are never archived by it (and count towards neither cap).
Off by default (both caps ``null``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from memos.policies.base import Action, Archive, CubeView, MemoryView, Policy, PolicySettings
from memos.types import AuditEvent, MemoryType


class CapacitySettings(PolicySettings):
    max_active: int | None = Field(None, ge=0, description="active memories a cube may hold (null: no cap)")
    max_tokens: int | None = Field(
        None, ge=0, description="estimated tokens its active memories may hold (null: no cap)"
    )
    chars_per_token: float = Field(4.0, gt=0, description="the token estimate: characters per token")
    keep_types: list[MemoryType] = Field(
        default_factory=list, description="types it never archives, outside the caps"
    )


def tokens(m: MemoryView, chars_per_token: float) -> int:
    """The estimated tokens of ``m``'s text."""
    return math.ceil(m.chars / chars_per_token)


class CapacityPolicy(Policy):
    name: ClassVar[str] = "capacity"
    Settings: ClassVar[type[PolicySettings]] = CapacitySettings
    order: ClassVar[int] = 30

    def decide(
        self, view: CubeView, events: Sequence[AuditEvent], now: datetime, settings: Any
    ) -> list[Action]:
        assert isinstance(settings, CapacitySettings)
        max_n, max_t = settings.max_active, settings.max_tokens
        if max_n is None and max_t is None:
            return []
        keep = {str(t) for t in settings.keep_types}
        candidates = [m for m in view.active if m.type not in keep]
        n = len(candidates)
        size = {m.id: tokens(m, settings.chars_per_token) for m in candidates}
        total = sum(size.values())
        over_n, over_t = max_n is not None and n > max_n, max_t is not None and total > max_t
        if not (over_n or over_t):
            return []
        covered = view.covered
        candidates.sort(
            key=lambda m: (not (m.type == "episode" and m.id in covered), m.heat, m.recorded_at, m.id)
        )
        caps = []
        if over_n:
            caps.append(f"{n} active > cap {max_n}")
        if over_t:
            caps.append(f"~{total} tokens > cap {max_t}")
        cap = ", ".join(caps)
        out: list[Action] = []
        for m in candidates:
            if (max_n is None or n <= max_n) and (max_t is None or total <= max_t):
                break
            why = "covered by a derived memory, " if m.type == "episode" and m.id in covered else ""
            out.append(Archive(m.id, f"{cap}: {why}heat {m.heat:.3f}"))
            n, total = n - 1, total - size[m.id]
        return out
