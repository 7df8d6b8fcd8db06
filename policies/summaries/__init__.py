"""summaries: a session closed for a while is summarised into a ``summary`` memory.

A session (the ``session_id`` its episodes were added with) is summarised when no turn
was added to it for ``after`` and it has at least ``min_episodes`` active or archived
episodes. The summary is a memory of type ``summary`` whose provenance lists those
episodes (:meth:`MemOS.summarize_session`: the LLM when the home's extractor is ``"llm"``,
an extractive summary of at most ``max_chars`` otherwise), so capacity and decay can
archive the episodes without losing what they said (:attr:`CubeView.covered`). A session
is summarised once: a session that has a summary — in any state but purged — gets no
other, and turns added to it later are not in it. Off by default (``after = null``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from memos.policies.base import (
    Action,
    CubeView,
    Duration,
    MemoryView,
    Policy,
    PolicySettings,
    Summarize,
    format_duration,
)
from memos.types import AuditEvent, MemoryState


class SummariesSettings(PolicySettings):
    after: Duration | None = Field(
        None, description="a session with no new turn for this long is summarised (null: off)"
    )
    min_episodes: int = Field(4, ge=1, description="sessions with fewer episodes are left as they are")
    max_chars: int = Field(600, ge=80, le=20_000, description="the longest summary (characters)")


class SummariesPolicy(Policy):
    name: ClassVar[str] = "summaries"
    Settings: ClassVar[type[PolicySettings]] = SummariesSettings
    # after decay, before capacity (which archives covered episodes first from the next run)
    order: ClassVar[int] = 25

    def decide(
        self, view: CubeView, events: Sequence[AuditEvent], now: datetime, settings: Any
    ) -> list[Action]:
        assert isinstance(settings, SummariesSettings)
        if settings.after is None:
            return []
        done = {m.session_id for m in view.memories if m.type == "summary"}
        last: dict[str, datetime] = {}
        live: dict[str, list[MemoryView]] = {}
        for m in view.memories:
            if m.type != "episode" or m.session_id is None or m.session_id in done:
                continue
            last[m.session_id] = max(last.get(m.session_id, m.recorded_at), m.recorded_at)
            if m.state in (MemoryState.active, MemoryState.archived):
                live.setdefault(m.session_id, []).append(m)
        out: list[Action] = []
        for session_id, episodes in sorted(live.items()):
            if len(episodes) < settings.min_episodes or now - last[session_id] < settings.after:
                continue
            out.append(
                Summarize(
                    memory_id=episodes[0].id,
                    reason=f"session {session_id!r}: no new turn for {format_duration(settings.after)} "
                    f"or more; {len(episodes)} episodes",
                    session_id=session_id,
                    episode_ids=tuple(m.id for m in episodes),
                    max_chars=settings.max_chars,
                )
            )
        return out
