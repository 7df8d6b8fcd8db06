"""Domain types of memos: plain pydantic models, no storage code."""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class MemoryKind(StrEnum):
    plaintext = "plaintext"
    activation = "activation"
    parametric = "parametric"


class MemoryType(StrEnum):
    episode = "episode"  # a raw conversation turn
    fact = "fact"
    preference = "preference"
    profile = "profile"
    procedure = "procedure"
    chunk = "chunk"  # a piece of a document
    summary = "summary"  # a session's summary; its provenance lists the session's episodes


class MemoryState(StrEnum):
    active = "active"
    archived = "archived"
    expired = "expired"
    superseded = "superseded"
    deleted = "deleted"  # soft: restorable
    purged = "purged"  # hard: only a tombstone id stays in the audit log


#: states a search can return
SEARCHABLE_STATES = frozenset({MemoryState.active})
#: states whose rows keep their index points: archived and expired memories leave default
#: search (the retriever reads each candidate's state from its row) but come back without
#: re-embedding (``search(include_archived=True)``, ``restore``)
INDEXED_STATES = frozenset({MemoryState.active, MemoryState.archived, MemoryState.expired})

#: a summary's metadata key: the digest of the text the summaries service wrote, so that a
#: person's edit of its text is told apart from a change of its tags or importance
SUMMARY_DIGEST = "text_sha256"


def text_digest(text: str) -> str:
    """The hex SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()


class Role(StrEnum):
    owner = "owner"
    writer = "writer"
    reader = "reader"


class Provenance(BaseModel):
    """Where a memory came from."""

    model_config = ConfigDict(extra="forbid")

    message_id: str | None = None
    session_id: str | None = None
    speaker: str | None = None
    role: str | None = None
    timestamp: datetime | None = None
    source_ids: list[str] = Field(default_factory=list, description="memories it was derived from")
    extractor: str | None = None
    confidence: float | None = None


class MemoryItem(BaseModel):
    """One memory of a cube, at its current version."""

    model_config = ConfigDict(extra="forbid")

    id: str
    cube_id: str
    kind: MemoryKind = MemoryKind.plaintext
    type: MemoryType = MemoryType.episode
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    importance: float = 0.5
    provenance: Provenance = Field(default_factory=Provenance)
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    recorded_at: datetime
    retired_at: datetime | None = None
    version: int = 1
    state: MemoryState = MemoryState.active
    superseded_by: str | None = None
    hits: int = 0
    last_accessed: datetime | None = None
    updated_at: datetime


class MemoryVersion(BaseModel):
    """A snapshot of a memory as it was at one version."""

    memory_id: str
    version: int
    text: str
    metadata: dict[str, Any]
    tags: list[str]
    importance: float
    valid_from: datetime | None
    valid_to: datetime | None
    recorded_at: datetime
    actor: str | None
    reason: str | None


class AuditEvent(BaseModel):
    """One lifecycle event: who did what to which memory, when and why."""

    id: int
    ts: datetime
    actor: str | None
    cube_id: str | None
    memory_id: str | None
    action: str
    reason: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class History(BaseModel):
    memory_id: str
    versions: list[MemoryVersion]
    events: list[AuditEvent]


class User(BaseModel):
    id: str
    name: str
    created_at: datetime


class Cube(BaseModel):
    id: str
    name: str
    owner_id: str
    created_at: datetime
    description: str | None = None
    role: Role | None = Field(None, description="the asking user's role on this cube")


class Share(BaseModel):
    cube_id: str
    user_id: str
    role: Role
    granted_at: datetime
    granted_by: str | None


class SearchHit(BaseModel):
    """A retrieved memory with the reasons it was returned."""

    memory: MemoryItem
    score: float
    scores: dict[str, float] = Field(default_factory=dict, description="per-path scores (dense, lexical, …)")
    ranks: dict[str, int] = Field(default_factory=dict, description="rank within each path, 1-based")
    why: list[str] = Field(default_factory=list, description="human-readable reasons")


class AddResult(BaseModel):
    """What one ``add`` call stored."""

    memories: list[MemoryItem]
    derived: list[MemoryItem] = Field(default_factory=list, description="facts extracted from the episodes")
    superseded: list[str] = Field(default_factory=list)
    entities: int = 0
    relations: int = 0
    extraction_failures: int = 0


class ChatImport(BaseModel):
    """What one ``import_chat`` did: the file's sessions and messages, and what ``add`` made of them."""

    file: str
    sessions: int
    messages: int
    added: int = Field(0, description="messages stored as new episodes")
    skipped: int = Field(0, description="messages whose ids the cube holds already")
    derived: int = Field(0, description="facts extracted from the new episodes")
    extraction_failures: int = 0
    cube_id: str


class Page(BaseModel):
    items: list[MemoryItem]
    total: int
    offset: int
    limit: int
