"""Row ↔ domain-type conversion (one place, so the SDK and the archive agree)."""

from __future__ import annotations

from memos.storage.relational.models import AuditRow, MemoryRow, MemoryVersionRow
from memos.types import AuditEvent, MemoryItem, MemoryKind, MemoryState, MemoryType, MemoryVersion, Provenance


def memory_from_row(row: MemoryRow) -> MemoryItem:
    return MemoryItem(
        id=row.id,
        cube_id=row.cube_id,
        kind=MemoryKind(row.kind),
        type=MemoryType(row.type),
        text=row.text,
        metadata=dict(row.meta or {}),
        tags=list(row.tags or []),
        importance=row.importance,
        provenance=Provenance(
            message_id=row.message_id,
            session_id=row.session_id,
            speaker=row.speaker,
            role=row.role,
            timestamp=row.occurred_at,
            source_ids=list(row.source_ids or []),
            extractor=row.extractor,
            confidence=row.confidence,
        ),
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        recorded_at=row.recorded_at,
        retired_at=row.retired_at,
        version=row.version,
        state=MemoryState(row.state),
        superseded_by=row.superseded_by,
        hits=row.hits,
        last_accessed=row.last_accessed,
        updated_at=row.updated_at,
    )


def version_from_row(row: MemoryVersionRow) -> MemoryVersion:
    return MemoryVersion(
        memory_id=row.memory_id,
        version=row.version,
        text=row.text,
        metadata=dict(row.meta or {}),
        tags=list(row.tags or []),
        importance=row.importance,
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        recorded_at=row.recorded_at,
        actor=row.actor,
        reason=row.reason,
    )


def event_from_row(row: AuditRow) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        ts=row.ts,
        actor=row.actor,
        cube_id=row.cube_id,
        memory_id=row.memory_id,
        action=row.action,
        reason=row.reason,
        details=dict(row.details or {}),
    )


def snapshot(row: MemoryRow, actor: str | None, reason: str | None) -> MemoryVersionRow:
    """The version row that records ``row`` as it is now."""
    return MemoryVersionRow(
        memory_id=row.id,
        version=row.version,
        text=row.text,
        meta=dict(row.meta or {}),
        tags=list(row.tags or []),
        importance=row.importance,
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        recorded_at=row.updated_at,
        actor=actor,
        reason=reason,
    )
