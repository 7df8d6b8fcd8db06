"""summaries: a session closed for a while is summarised into a ``summary`` memory, and
its summary is refreshed when the session resumes.

A session (the ``session_id`` its episodes were added with) is summarised when no turn
was added to it for ``after`` and it has at least ``min_episodes`` active or archived
episodes. The summary is a memory of type ``summary`` whose provenance lists those
episodes (:meth:`MemOS.summarize_session`: the LLM when the home's extractor is ``"llm"``,
an extractive summary of at most ``max_chars`` otherwise), so capacity and decay can
archive the episodes without losing what they said (:attr:`CubeView.covered`).

A session has one summary. When it resumes (turns added under the same ``session_id``
days later) and is again idle for ``after``, its summary — if it does not link to every
active or archived episode — is rewritten from all of them as a new version of the same
memory (``refresh_summary``: the history keeps the old text; its provenance grows to the
whole session), so the later turns are covered too; until then they are not, and capacity
treats them as uncovered episodes (``min_episodes`` is for the first summary: one later
turn is enough). Once refreshed it links to every episode, so the next run leaves it
alone. A summary whose text a person changed (its text is no longer the one the summaries
service wrote, whose digest it keeps in ``metadata["text_sha256"]``; for a summary written
before that key, its version is past the one the service wrote, ``metadata["version"]``)
or added by hand (no ``summary_of``) is never rewritten by the policy: its words are
theirs, and a machine summary would silently replace them — a change of its tags or
importance is no such edit —
``summarize_session(..., refresh=True)`` rewrites it when they ask. A deleted, expired or
superseded summary is left as it is too, and no second one is written. Off by default
(``after = null``).
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
    RefreshSummary,
    Summarize,
    format_duration,
)
from memos.types import SUMMARY_DIGEST, AuditEvent, MemoryState


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
        # the session's summary is the oldest (MemOS.summarize_session finds the same one)
        summaries: dict[str, MemoryView] = {}
        for m in sorted(view.memories, key=lambda m: (m.recorded_at, m.id)):
            if m.type == "summary" and m.session_id is not None:
                summaries.setdefault(m.session_id, m)
        last: dict[str, datetime] = {}
        live: dict[str, list[MemoryView]] = {}
        for m in view.memories:
            if m.type != "episode" or m.session_id is None:
                continue
            last[m.session_id] = max(last.get(m.session_id, m.recorded_at), m.recorded_at)
            if m.state in (MemoryState.active, MemoryState.archived):
                live.setdefault(m.session_id, []).append(m)
        idle = format_duration(settings.after)
        out: list[Action] = []
        for session_id, episodes in sorted(live.items()):
            if now - last[session_id] < settings.after:
                continue
            summary = summaries.get(session_id)
            if summary is None:
                if len(episodes) >= settings.min_episodes:
                    out.append(
                        Summarize(
                            memory_id=episodes[0].id,
                            reason=f"session {session_id!r}: no new turn for {idle} or more; "
                            f"{len(episodes)} episodes",
                            session_id=session_id,
                            episode_ids=tuple(m.id for m in episodes),
                            max_chars=settings.max_chars,
                        )
                    )
                continue
            linked = set(summary.source_ids)
            new = [m for m in episodes if m.id not in linked]
            if new and _written_by_service(summary, session_id):
                out.append(
                    RefreshSummary(
                        memory_id=summary.id,
                        reason=f"session {session_id!r} resumed: {len(new)} episodes since its summary, "
                        f"no new turn for {idle} or more; {len(episodes)} episodes",
                        session_id=session_id,
                        episode_ids=tuple(m.id for m in episodes),
                        max_chars=settings.max_chars,
                        version=summary.version,
                    )
                )
        return out


def _written_by_service(summary: MemoryView, session_id: str) -> bool:
    """A live summary whose current text the summaries service wrote (not a person)."""
    meta = summary.metadata
    if summary.state not in (MemoryState.active, MemoryState.archived) or meta.get("summary_of") != session_id:
        return False
    if SUMMARY_DIGEST in meta:
        return meta[SUMMARY_DIGEST] == summary.digest
    return meta.get("version", 1) == summary.version  # written before the digest (or refresh) existed
