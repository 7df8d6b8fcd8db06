"""activation: keeps each cube's KV prefix compiled from its hottest stable memories.

The hot set, at ``now``: the cube's active memories of ``types`` that searches returned
at least ``min_hits`` times and that have not changed for ``stable_for``, by heat (the
heat policy's score) then id, taken while their estimated size fits ``token_budget``
(``chars / chars_per_token + 4`` tokens a line, ``reserve`` tokens kept for the system
prompt). The estimate only chooses; the kernel counts the real tokens with the runtime
when it compiles and leaves out, from the end, what does not fit.

Episodes are promoted too: in a cube fed by conversations the turns are most of what
searches return (on the LoCoMo development conversations a cube holds ~25 facts beside
~450 turns, and with facts alone the prefix came too late for a fifth of the chats).

The prefix is computed under the cube's active LoRA adapters (the ``lora`` artifacts in
state ``active`` and still valid: those a chat on the cube applies), so that a chat
applying them starts from it; a chat uses a prefix only under exactly the adapters it was
computed under.

The prefix is the newest one named ``name`` compiled for the runtime (``runtime``, or the
home's configured chat runtime). The policy asks for a (re)compile when there is none, when
it is no longer valid (a memory inside was updated, deleted, archived or purged, or an
adapter it was computed under is no longer active), when the active adapters changed (one
was activated: the prefix holds the others' keys and values), or when the hot set has
drifted: Jaccard(hot set, prefix's memories) < ``min_jaccard``. Never twice within
``min_interval`` of the last compile (debounce). An empty hot set leaves the prefix as it
is. The kernel compiles the new prefix, then switches the manifest rows in one
transaction; a chat that already holds the old prefix finishes with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field

from memos.policies.base import (
    Action,
    ArtifactView,
    CompileActivation,
    CubeView,
    Duration,
    MemoryView,
    Policy,
    PolicySettings,
    format_duration,
)
from memos.types import AuditEvent, MemoryType

KV_PREFIX = "kv_prefix"
LORA = "lora"


class ActivationSettings(PolicySettings):
    name: str = Field("auto", min_length=1, max_length=64, description="the prefix the policy keeps")
    runtime: str | None = Field(None, description="the runtime to compile for (null: the configured one)")
    token_budget: int = Field(1024, ge=16, description="prefix tokens at most (system prompt included)")
    types: list[MemoryType] = Field(
        default_factory=lambda: [
            MemoryType(t) for t in ("profile", "preference", "fact", "procedure", "summary", "episode")
        ],
        description="the memory types that may enter the prefix (documents' chunks are left to retrieval)",
    )
    min_hits: int = Field(3, ge=0, description="searches that returned a memory before it is promoted")
    stable_for: Duration = Field(timedelta(hours=1), description="unchanged this long before promotion")
    max_memories: int = Field(64, ge=1, le=1000, description="memories in the prefix at most")
    min_jaccard: float = Field(0.8, ge=0, le=1, description="recompile when the hot set drifts below this")
    min_interval: Duration = Field(timedelta(minutes=10), description="no two compiles closer than this")
    chars_per_token: float = Field(4.0, gt=0, description="the decision's token estimate")
    reserve: int = Field(64, ge=0, description="estimated tokens kept for the system prompt")


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def hot_set(view: CubeView, now: datetime, cfg: ActivationSettings) -> list[MemoryView]:
    types = {str(t) for t in cfg.types}
    ready = [
        m
        for m in view.active
        if m.type in types and m.hits >= cfg.min_hits and now - m.updated_at >= cfg.stable_for
    ]
    ready.sort(key=lambda m: (-m.heat, m.id))
    out: list[MemoryView] = []
    used = cfg.reserve
    for m in ready[: cfg.max_memories]:
        cost = math.ceil(m.chars / cfg.chars_per_token) + 4
        if used + cost > cfg.token_budget:
            break
        out.append(m)
        used += cost
    return out


def active_adapters(view: CubeView) -> tuple[str, ...]:
    """The ids of the cube's active, valid adapters that a chat on the configured runtime
    applies (stored in its LoRA format: an adapter never exported to GGUF is not applied by
    llama.cpp), oldest first; none on a runtime that computes prefixes without adapters."""
    fmt = view.lora_format
    if fmt is None:
        return ()
    return tuple(a.id for a in view.artifacts_of(LORA) if a.state == "active" and a.live and fmt in a.formats)


def current_prefix(view: CubeView, name: str, runtime: str) -> ArtifactView | None:
    mine = [a for a in view.artifacts_of(KV_PREFIX) if a.name == name and a.runtime == runtime]
    return max(mine, key=lambda a: (a.created_at, a.id), default=None)


class ActivationPolicy(Policy):
    name: ClassVar[str] = "activation"
    Settings: ClassVar[type[PolicySettings]] = ActivationSettings
    order: ClassVar[int] = 60

    def decide(
        self, view: CubeView, events: Sequence[AuditEvent], now: datetime, settings: Any
    ) -> list[Action]:
        assert isinstance(settings, ActivationSettings)
        runtime = settings.runtime or view.runtime
        if runtime is None:
            return []
        hot = hot_set(view, now, settings)
        if not hot:
            return []
        ids = tuple(m.id for m in hot)
        adapters = active_adapters(view)
        prefix = current_prefix(view, settings.name, runtime)
        if prefix is None:
            why = f"no {settings.name!r} prefix for {runtime} yet"
        else:
            if now - prefix.created_at < settings.min_interval:
                return []
            j = jaccard(ids, prefix.memory_ids)
            if not prefix.live:
                why = (
                    f"prefix {prefix.id[:12]} is no longer valid (a memory inside changed or went, "
                    "or an adapter it was computed under is no longer active)"
                )
            elif set(prefix.adapters) != set(adapters):
                why = f"the active adapters changed: {_ids(prefix.adapters)} -> {_ids(adapters)}"
            elif j < settings.min_jaccard:
                why = f"the hot set drifted: Jaccard {j:.2f} < {settings.min_jaccard:g}"
            else:
                return []
            why += f"; last compiled {format_duration(now - prefix.created_at)} ago"
        return [
            CompileActivation(
                reason=f"{why}: {len(ids)} hot stable memories",
                memory_ids=ids,
                name=settings.name,
                runtime=settings.runtime,
                token_budget=settings.token_budget,
                adapters=adapters,
            )
        ]


def _ids(adapters: Sequence[str]) -> str:
    return "[" + ", ".join(a[:12] for a in adapters) + "]"
