"""What happened in a home, as typed events, for whoever needs to react.

Every change of a memory, a cube or a user is an :class:`Event` with the actor, the cube,
the memory ids and the time (the home's clock). A service records the events of a change
in its transaction (:mod:`memos.audit`, the audit log's one writer: the durable record
commits or rolls back with the change) and they are published *after* that transaction
committed — so a subscriber never sees a change that was rolled back. Reads publish too
(``memory_accessed``, built only when someone :meth:`EventBus.wants` it; never audited),
and so does a chat turn. Subscribers run in the thread that made the change, in the
order they subscribed; one that fails does not keep the others from running, and its
error reaches the caller once all have run (erasure must never fail silently).

Who listens: activation and parametric memory, which retire every KV prefix and adapter
built from a purged memory as the purge returns (erasure's guarantee). The scheduler's
policies (:mod:`memos.scheduler.policies`) read what happened from the audit log, the
durable record of these events, when they run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


class EventKind(StrEnum):
    memory_added = "memory_added"
    memory_extracted = "memory_extracted"  # a fact derived by the extractor; details: source, extractor
    memory_accessed = "memory_accessed"  # returned by a search
    memory_updated = "memory_updated"  # details: version, changed
    memory_deleted = "memory_deleted"  # details: from, to (states)
    memory_restored = "memory_restored"
    memory_archived = "memory_archived"  # out of default search, restorable; details: from, to
    memory_expired = "memory_expired"  # out of search, purged after a grace period; details: from, to
    memory_purged = "memory_purged"  # the first id is the one purged; the others went with it
    memory_superseded = "memory_superseded"  # details: by (the new fact), predicate
    memory_merged = "memory_merged"  # near-duplicates merged; details: into (the kept one), merged (ids)
    extraction_failed = "extraction_failed"  # details: extractor, error
    indexing_failed = "indexing_failed"  # quarantined; details: error
    chat_turn = "chat_turn"
    artifact_compiled = "artifact_compiled"  # a KV prefix or a LoRA adapter
    artifact_retired = "artifact_retired"
    user_added = "user_added"
    cube_created = "cube_created"
    cube_deleted = "cube_deleted"  # details: memories (how many went), artifacts (retired with it)
    cube_shared = "cube_shared"  # details: user, role
    cube_unshared = "cube_unshared"  # details: user
    cube_exported = "cube_exported"
    cube_imported = "cube_imported"
    policy_failed = "policy_failed"  # a policy raised; details: policy, error (the others still ran)
    policy_set = "policy_set"  # a cube's policy setting changed; details: policy, key, value
    policy_applied = "policy_applied"  # a policy's action on derived memory; details: policy, action, …
    blobs_swept = "blobs_swept"  # blob files no row names removed (no cube); details: removed, files, grace


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    at: datetime
    actor: str | None
    cube_id: str | None
    memory_ids: tuple[str, ...] = ()
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


Handler = Callable[[Event], None]


class EventBus:
    """Synchronous publish/subscribe within one process."""

    def __init__(self) -> None:
        self._subscribers: list[tuple[frozenset[EventKind] | None, Handler]] = []
        self._lock = threading.Lock()

    def subscribe(self, handler: Handler, kinds: Iterable[EventKind] | None = None) -> Callable[[], None]:
        """Call ``handler`` with every event (of ``kinds``, if given); returns the unsubscriber."""
        entry = (frozenset(kinds) if kinds is not None else None, handler)
        with self._lock:
            self._subscribers.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._subscribers:
                    self._subscribers.remove(entry)

        return unsubscribe

    def wants(self, kind: EventKind) -> bool:
        """Whether anyone listens for ``kind`` (so a hot path can skip building the event)."""
        return any(kinds is None or kind in kinds for kinds, _ in self._subscribers)

    def publish(self, *events: Event) -> None:
        """Hand ``events`` to their subscribers now (a change's events come through
        :func:`memos.audit.recording`, which calls this after the commit)."""
        with self._lock:
            subscribers = list(self._subscribers)
        if not subscribers:
            return
        errors: list[BaseException] = []
        for event in events:
            for kinds, handler in subscribers:
                if kinds is not None and event.kind not in kinds:
                    continue
                try:
                    handler(event)
                except Exception as exc:  # noqa: BLE001 - the others still run; raised below
                    log.exception("subscriber %r failed on %s", handler, event.kind)
                    errors.append(exc)
        if errors:
            raise errors[0]
