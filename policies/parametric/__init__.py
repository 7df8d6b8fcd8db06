"""parametric: stable, frequently used facts are consolidated into a LoRA adapter.

Training takes minutes on a CPU and changes how the model answers, so the policy is **off
by default** (``enabled = false``); turned on, it acts only in an allowed window:

    allowed(now) = (window is null or now's UTC time of day is inside window)
                   and (idle_for is null or now − the cube's last activity ≥ idle_for)

where the last activity is the latest add, change or search hit of a memory of the cube.
Then, with ``fresh`` = the active memories of ``types`` used at least ``min_hits`` times,
unchanged for ``stable_for``, and in no adapter that holds them as they are now (active,
inactive or rejected by its gate — a rejected set is not retried until more arrives):

- ``len(fresh) ≥ min_new`` → ConsolidateParametric on the memories of the cube's live
  active adapter named ``name`` plus ``fresh`` (hottest first, at most ``max_memories``),
  so the new adapter keeps what the old one knew; the gate decides whether it becomes
  active (and supersedes the old one);
- an adapter with a queued retrain, or an active one whose memories changed since (a
  memory inside was updated, deleted or purged) → RetrainParametric.

Both are queued as jobs (``parametric.consolidate`` keyed by the cube,
``parametric.retrain`` keyed by the adapter) that a worker runs; ``train`` overrides the
training options (``epochs``, ``rank``, …) of ``[parametric]``.

The policy's trainings anchor the adapter to the base model four times as hard as a
consolidation by hand (``replay_weight`` 4: the KL term on general text that keeps the
adapter from changing more than its facts need). They run unattended on a cube's handful of
conversation facts, and small sets pushed general-text perplexity past the gate: on the
LoCoMo development conversations (8–27 facts a cube) the worst adapter was ×1.064 at
weight 1 (two of five rejected) and ×1.037 at 4 (all five pass), held-out recall 1.0 both.
With the larger anchor text and the drift-aware choice of epoch (:mod:`memos.parametric.train`)
and the held-out questions no longer choosing it, ``memos bench lifecycle`` measured
×1.023 for the worst of five adapters, all active, held-out recall 0.91.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any, ClassVar

from pydantic import Field, field_validator

from memos.policies.base import (
    Action,
    ConsolidateParametric,
    CubeView,
    Duration,
    Policy,
    PolicySettings,
    RetrainParametric,
)
from memos.types import AuditEvent, MemoryType

LORA = "lora"


class ParametricSettings(PolicySettings):
    enabled: bool = False
    name: str = Field("auto", min_length=1, max_length=64, description="the adapter the policy trains")
    types: list[MemoryType] = Field(
        default_factory=lambda: [MemoryType(t) for t in ("fact", "profile", "preference", "procedure")],
        description="the memory types consolidated",
    )
    min_hits: int = Field(2, ge=0, description="searches that returned a memory before it is consolidated")
    stable_for: Duration = Field(timedelta(days=1), description="unchanged this long before consolidation")
    min_new: int = Field(8, ge=1, description="memories not yet in an adapter that start a consolidation")
    max_memories: int = Field(200, ge=1, le=5000, description="memories in one adapter at most")
    window: str | None = Field(None, description='UTC hours when training may start, e.g. "01:00-05:00"')
    idle_for: Duration | None = Field(
        timedelta(minutes=30), description="the cube unused this long before training starts (null: any time)"
    )
    replay_weight: float = Field(
        4.0, gt=0, description="the weight of the general-text anchor in the policy's trainings"
    )
    train: dict[str, Any] = Field(default_factory=dict, description="training options over [parametric]")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window(value)
        return value


def parse_window(value: str) -> tuple[time, time]:
    try:
        start, end = (time.fromisoformat(p.strip()) for p in value.split("-"))
    except ValueError as exc:
        raise ValueError(f'a window is "HH:MM-HH:MM" in UTC, got {value!r}') from exc
    return start, end


def allowed(view: CubeView, now: datetime, cfg: ParametricSettings) -> str | None:
    """Why training may not start now, or None."""
    if cfg.window is not None:
        start, end = parse_window(cfg.window)
        t = (now.astimezone(UTC) if now.tzinfo is not None else now).time()
        inside = start <= t < end if start <= end else (t >= start or t < end)
        if not inside:
            return f"outside the window {cfg.window}"
    last = view.last_activity
    if cfg.idle_for is not None and last is not None and now - last < cfg.idle_for:
        return "the cube is in use"
    return None


class ParametricPolicy(Policy):
    name: ClassVar[str] = "parametric"
    Settings: ClassVar[type[PolicySettings]] = ParametricSettings
    order: ClassVar[int] = 70

    def decide(
        self, view: CubeView, events: Sequence[AuditEvent], now: datetime, settings: Any
    ) -> list[Action]:
        assert isinstance(settings, ParametricSettings)
        if allowed(view, now, settings) is not None:
            return []
        adapters = view.artifacts_of(LORA)
        out: list[Action] = [
            RetrainParametric(reason="a memory it was trained on changed or was purged", adapter_id=a.id)
            for a in sorted(adapters, key=lambda a: a.id)
            if a.retrain or (a.outdated and a.state in ("active", "inactive"))
        ]
        held = {
            m for a in adapters if a.state in ("active", "inactive", "rejected") and not a.outdated
            for m in a.memory_ids
        }  # fmt: skip
        types = {str(t) for t in settings.types}
        fresh = sorted(
            (
                m
                for m in view.active
                if m.type in types
                and m.id not in held
                and m.hits >= settings.min_hits
                and now - m.updated_at >= settings.stable_for
            ),
            key=lambda m: (-m.heat, m.id),
        )
        if len(fresh) >= settings.min_new:
            live = [a for a in adapters if a.name == settings.name and a.state == "active" and a.live]
            kept = [m for a in live[:1] for m in a.memory_ids if (v := view.get(m)) and v.state == "active"]
            ids = tuple(dict.fromkeys([*kept, *(m.id for m in fresh)]))[: settings.max_memories]
            out.append(
                ConsolidateParametric(
                    reason=f"{len(fresh)} stable memories used ≥ {settings.min_hits} times are in no adapter "
                    f"(≥ {settings.min_new})",
                    memory_ids=ids,
                    name=settings.name,
                    train=tuple(sorted({"replay_weight": settings.replay_weight, **settings.train}.items())),
                )
            )
        return out
