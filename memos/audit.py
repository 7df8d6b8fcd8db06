"""The audit log's one writer: each recorded event becomes its rows, in the change's transaction.

A service records what it changed with :meth:`memos.home.Home.recording`::

    with home.recording() as rec:
        with home.write_lock, home.store.session() as s:
            ...  # the change
            rec.record(s, Event(EventKind.memory_updated, now, actor, cube_id, (memory_id,)))
        ...  # the index, caches

:meth:`Recording.record` writes the audit rows in ``s``, so they commit or roll back with
the change itself (a crash between the commit and a later audit write cannot lose them),
and keeps the events to publish. The ``with`` publishes, once it ends, the events of every
session that committed — never those of one that rolled back — so subscribers see only
what happened, after the service finished its own follow-up (the index is in step).

One row per memory of an event (one without memories has one row), with the event's
actor, cube, reason and details; the stored ``action`` names are those of the first
homes (``add``, ``update``, ``purge``, ``user_add``, …) so old homes and archives read the
same. Two events also rewrite what is there: a purge keeps only the skeleton of the
memories' earlier rows (their tombstone says no more than ids, actor and reason), and a
deleted cube's rows go with it (its ``cube_delete`` row is the record).

Only this module constructs audit rows; the archive importer restores an archive's rows
verbatim (they are the exported home's record, not events of this one).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import delete, event, insert, update
from sqlalchemy.orm import Session

from memos.events import Event, EventBus, EventKind
from memos.storage.relational.bulk import execute_many
from memos.storage.relational.models import AuditRow

#: the audit log's name for each kind of event it records (unchanged since the first homes)
ACTIONS: dict[EventKind, str] = {
    EventKind.memory_added: "add",
    EventKind.memory_extracted: "extract",
    EventKind.memory_updated: "update",
    EventKind.memory_deleted: "delete",
    EventKind.memory_restored: "restore",
    EventKind.memory_archived: "archive",
    EventKind.memory_expired: "expire",
    EventKind.memory_purged: "purge",
    EventKind.memory_superseded: "supersede",
    EventKind.memory_merged: "merge",
    EventKind.extraction_failed: "extract_failed",
    EventKind.indexing_failed: "index_failed",
    EventKind.user_added: "user_add",
    EventKind.cube_created: "cube_create",
    EventKind.cube_deleted: "cube_delete",
    EventKind.cube_shared: "share",
    EventKind.cube_unshared: "unshare",
    EventKind.cube_exported: "export",
    EventKind.cube_imported: "import",
    EventKind.policy_failed: "policy_failed",
    EventKind.policy_set: "policy_set",
    EventKind.policy_applied: "policy_applied",
    EventKind.blobs_swept: "blob_sweep",
}


def write(s: Session, events: Sequence[Event]) -> None:
    """Write the audit rows of ``events`` in ``s`` (one many-row insert per run of events)."""
    rows: list[dict[str, Any]] = []
    for e in events:
        action = ACTIONS.get(e.kind)
        if action is None:
            raise ValueError(f"{e.kind} events are not audited; publish them instead of recording them")
        if e.kind in (EventKind.memory_purged, EventKind.cube_deleted):
            _insert(s, rows)  # what precedes the rewrite is rewritten with the rest
            rows = []
            if e.kind is EventKind.memory_purged:
                _scrub(s, e.memory_ids)
            else:
                s.execute(delete(AuditRow).where(AuditRow.cube_id == e.cube_id))
        if not e.memory_ids:
            rows.append(_row(e, action, None, dict(e.details)))
        elif e.kind is EventKind.memory_purged:  # a tombstone: ids, actor, reason, nothing else
            asked = e.memory_ids[0]  # the others went with it
            rows += [
                _row(e, action, mid, {"tombstone": True} | ({} if mid == asked else {"with": asked}))
                for mid in e.memory_ids
            ]
        else:
            rows += [_row(e, action, mid, dict(e.details)) for mid in e.memory_ids]
    _insert(s, rows)


def _row(e: Event, action: str, memory_id: str | None, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "ts": e.at,
        "actor": e.actor,
        "cube_id": e.cube_id,
        "memory_id": memory_id,
        "action": action,
        "reason": e.reason,
        "details": details,
    }


def _insert(s: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        execute_many(s.connection(), insert(AuditRow.__table__), rows)  # type: ignore[arg-type]


def _scrub(s: Session, memory_ids: Sequence[str]) -> None:
    """Earlier rows of purged memories may carry content in details or reason: keep the skeleton."""
    ids = list(memory_ids)
    for start in range(0, len(ids), 500):
        s.execute(
            update(AuditRow)
            .where(AuditRow.memory_id.in_(ids[start : start + 500]))
            .values(details={}, reason=None)
            .execution_options(synchronize_session=False)
        )


class Recording:
    """The events of one unit of work: audited in their transaction, published after it commits."""

    def __init__(self) -> None:
        self._pending: dict[Session, list[Event]] = {}
        self.committed: list[Event] = []

    def record(self, s: Session, *events: Event) -> None:
        """Audit ``events`` in ``s`` now; publish them once ``s`` has committed."""
        if not events:
            return
        write(s, events)
        pending = self._pending.get(s)
        if pending is None:
            pending = self._pending[s] = []
            event.listen(s, "after_commit", self._on_commit, once=True)
        pending.extend(events)

    def _on_commit(self, s: Session) -> None:
        self.committed += self._pending.pop(s, [])


@contextmanager
def recording(bus: EventBus) -> Iterator[Recording]:
    """A unit of work whose committed events ``bus`` publishes when it ends.

    Also when it ends with an error raised after a commit: that change happened. The error
    is what the caller sees then (a failing subscriber is logged by the bus)."""
    rec = Recording()
    try:
        yield rec
    except BaseException:
        if rec.committed:
            with suppress(Exception):
                bus.publish(*rec.committed)
        raise
    bus.publish(*rec.committed)
