"""heat: how much a memory is in use, scored from what the access statistics keep.

    heat = type_weight[type] × (1 + ln(1 + hits)) × 2^(−idle / half_life)
           + importance_weight × importance

``hits`` and ``idle`` (now − the later of when it was added and when a search last
returned it) are what :mod:`memos.plaintext.hits` stores, so a score costs a few float
operations and no history scan. Frequency counts logarithmically (the hundredth hit
says less than the second), recency decays with a half-life (MemoryOS's exp(−Δt/τ), with
τ = half_life / ln 2), and importance is added, not multiplied: a memory marked
important never goes fully cold (with the defaults, importance 1 keeps heat ≥ 0.5, the
decay policy's default threshold). Interaction length, MemoryOS's third term, is not
kept per memory; type weights stand in for "how much a hit of this kind is worth".

Why a half-life of 180 days: long-lived assistants are asked about months-old things.
On the LoCoMo development conversations replayed by ``memos bench lifecycle`` (a capacity
cap at half of each cube), a memory used once a few months ago must stay warmer than one
added last week that no search ever used; with 30 days the opposite held and the cap
archived a third of the evidence still asked about (recall@10 0.68 against 0.77 without
the cap; 0.73 with 180 days, and 365 days gained nothing more). It is a default measured
on a development set: an application with a different rhythm sets its own.

The heat policy takes no action: the others (decay, capacity) read its scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field

from memos.policies.base import Action, CubeView, Duration, Policy, PolicySettings
from memos.types import AuditEvent, MemoryType

DEFAULT_TYPE_WEIGHTS = {
    "episode": 1.0,
    "chunk": 1.0,
    "fact": 1.5,
    "preference": 1.5,
    "procedure": 1.5,
    "profile": 2.0,
}


class HeatSettings(PolicySettings):
    half_life: Duration = Field(timedelta(days=180), description="idle time that halves the recency term")
    importance_weight: float = Field(0.5, ge=0, description="weight of importance (0..1), added")
    type_weights: dict[MemoryType, float] = Field(
        default_factory=lambda: {MemoryType(k): v for k, v in DEFAULT_TYPE_WEIGHTS.items()},
        description="multiplier of the use term per memory type (a missing type counts 1)",
    )


def heat(
    *,
    hits: int,
    idle: timedelta,
    importance: float,
    type_weight: float,
    half_life: timedelta,
    importance_weight: float,
) -> float:
    recency = 0.5 ** (max(idle.total_seconds(), 0.0) / half_life.total_seconds())
    return type_weight * (1 + math.log1p(max(hits, 0))) * recency + importance_weight * importance


class HeatPolicy(Policy):
    name: ClassVar[str] = "heat"
    Settings: ClassVar[type[PolicySettings]] = HeatSettings
    order: ClassVar[int] = 0

    def scores(self, view: CubeView, now: datetime, settings: Any) -> dict[str, float]:
        assert isinstance(settings, HeatSettings)
        weights = {str(k): v for k, v in settings.type_weights.items()}
        return {
            m.id: heat(
                hits=m.hits,
                idle=now - m.last_touched,
                importance=m.importance,
                type_weight=weights.get(m.type, 1.0),
                half_life=settings.half_life,
                importance_weight=settings.importance_weight,
            )
            for m in view.memories
        }

    def decide(
        self, view: CubeView, events: Sequence[AuditEvent], now: datetime, settings: Any
    ) -> list[Action]:
        return []
