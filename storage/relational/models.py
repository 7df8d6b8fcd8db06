"""Relational schema — the source of truth of a memos home.

Tables and why they exist:

- ``users``, ``cubes``, ``cube_acl``: tenancy. Every cube has an owner; ``cube_acl`` holds
  one row per (cube, user) with role owner/writer/reader, checked on every operation.
- ``memories``: one row per memory at its current version. ``index_state`` is the
  outbox of the vector index: a write commits the row as ``pending`` in the same
  transaction; the indexer upserts (or removes) the point and marks it ``done``. On open,
  ``pending`` rows are re-applied, so a crash at any point loses nothing.
- ``memory_versions``: a snapshot of every version of a memory (the current one too),
  so ``history`` can show what changed.
- ``entities``, ``memory_entities``, ``edges``: the graph. Edges carry the memory they
  were extracted from, so purging the memory removes them.
- ``sessions``, ``messages``: the raw conversation log, each message linked to the
  episode memory that holds it.
- ``audit_events``: every lifecycle transition (who, when, why). A purge leaves only a
  tombstone here: the memory id, no content.
- ``index_tasks``: removals the vector index still owes for rows that no longer exist
  (purge, cube deletion); cleared once applied.
- ``jobs``: the scheduler's queue (:mod:`memos.scheduler.jobs`): claimed under a lease,
  retried with backoff, deduplicated by ``dedup_key`` while queued or running. Deferred
  extraction (``add(..., extract="defer")``) is queued here too (``extract.deferred``).
- ``blobs``: manifests of content-addressed files (KV caches, LoRA adapters).
- ``meta``: facts about the home (schema, embedder id and dimension of the index).

Migrations live in ``migrations/versions`` — numbered and append-only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CubeRow(Base):
    __tablename__ = "cubes"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_cubes_owner_name"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AclRow(Base):
    __tablename__ = "cube_acl"

    cube_id: Mapped[str] = mapped_column(ForeignKey("cubes.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    granted_by: Mapped[str | None] = mapped_column(String(128), nullable=True)


#: the covering index of the search's per-candidate state read (named in its statement)
MEMORY_STATE_INDEX = "ix_memories_id_state_importance"


class MemoryRow(Base):
    __tablename__ = "memories"
    __table_args__ = (
        Index("ix_memories_cube_state", "cube_id", "state"),
        Index("ix_memories_cube_session", "cube_id", "session_id"),
        Index("ix_memories_cube_type", "cube_id", "type"),
        Index("ix_memories_index_state", "index_state"),
        Index("ix_memories_cube_message", "cube_id", "message_id"),
        # every search reads state and importance of its ~200-400 candidates by id: from
        # this index alone, without visiting the (wide) table rows
        Index(MEMORY_STATE_INDEX, "id", "state", "importance"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cube_id: Mapped[str] = mapped_column(ForeignKey("cubes.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), default="plaintext")
    type: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    importance: Mapped[float] = mapped_column(Float, default=0.5)
    # provenance
    message_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    speaker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    extractor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    # bi-temporal time
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # lifecycle
    version: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default="active")
    superseded_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    last_accessed: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    index_state: Mapped[str] = mapped_column(String(16), default="pending")


class MemoryVersionRow(Base):
    __tablename__ = "memory_versions"
    __table_args__ = (UniqueConstraint("memory_id", "version", name="uq_memory_versions"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    memory_id: Mapped[str] = mapped_column(ForeignKey("memories.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    importance: Mapped[float] = mapped_column(Float)
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class EntityRow(Base):
    __tablename__ = "entities"
    __table_args__ = (UniqueConstraint("cube_id", "key", name="uq_entities_cube_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cube_id: Mapped[str] = mapped_column(ForeignKey("cubes.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MemoryEntityRow(Base):
    __tablename__ = "memory_entities"

    memory_id: Mapped[str] = mapped_column(ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True)
    entity_id: Mapped[int] = mapped_column(
        ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class EdgeRow(Base):
    __tablename__ = "edges"
    # the knowledge writer looks up a subject's current edges by predicate or object
    __table_args__ = (Index("ix_edges_src_predicate", "src_id", "predicate"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cube_id: Mapped[str] = mapped_column(ForeignKey("cubes.id", ondelete="CASCADE"), index=True)
    src_id: Mapped[int] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    predicate: Mapped[str] = mapped_column(String(64))
    dst_id: Mapped[int] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    memory_id: Mapped[str] = mapped_column(ForeignKey("memories.id", ondelete="CASCADE"), index=True)
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SessionRow(Base):
    __tablename__ = "sessions"

    cube_id: Mapped[str] = mapped_column(ForeignKey("cubes.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_active: Mapped[datetime] = mapped_column(UTCDateTime())


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_cube_session", "cube_id", "session_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cube_id: Mapped[str] = mapped_column(ForeignKey("cubes.id", ondelete="CASCADE"))
    session_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    message_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    role: Mapped[str] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    content: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    memory_id: Mapped[str] = mapped_column(ForeignKey("memories.id", ondelete="CASCADE"), index=True)


class AuditRow(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str | None] = mapped_column(String(128), nullable=True)
    cube_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    memory_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class IndexTaskRow(Base):
    __tablename__ = "index_tasks"

    memory_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    op: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


#: the states of a job that hold its dedup key (at most one such job per kind and key)
LIVE_JOB_STATES = ("queued", "running")
_LIVE_JOB = text("state IN ('queued', 'running') AND dedup_key IS NOT NULL")

#: the job kind of deferred extraction: a payload ``{"memory_ids": [...], "actor": user,
#: "done": n}`` of episodes of one cube, in the order they were added (``done``: how many
#: of them are extracted, advanced in the transaction that extracts them)
EXTRACT_JOB = "extract.deferred"
#: kinds whose jobs of one cube run one at a time, in the order they were queued: a job is
#: claimed only once no earlier job of its kind and cube is queued or running
SERIAL_JOB_KINDS = (EXTRACT_JOB,)


class JobRow(Base):
    """A unit of work for the scheduler's workers (see :mod:`memos.scheduler.jobs`).

    ``attempts`` counts claims; ``lease_owner``/``lease_expires_at`` say who runs it until
    when (a fence: only that owner, at that attempt, may finish it). ``cube_id`` is a plain
    column like the audit log's: a job's record outlives its cube."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claim", "state", "run_after"),
        Index("ix_jobs_cube_state", "cube_id", "state"),
        Index(
            "uq_jobs_live_key",
            "kind",
            "dedup_key",
            unique=True,
            sqlite_where=_LIVE_JOB,
            postgresql_where=_LIVE_JOB,
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    cube_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dedup_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    run_after: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BlobRow(Base):
    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    cube_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class MetaRow(Base):
    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
