"""The ``.memcube`` format, version 1: its members and its manifest (see :mod:`memos.archive`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import Table

from memos.storage.relational.models import (
    AclRow,
    AuditRow,
    BlobRow,
    EdgeRow,
    EntityRow,
    MemoryEntityRow,
    MemoryRow,
    MemoryVersionRow,
    MessageRow,
    SessionRow,
)
from memos.types import MemoryKind, MemoryState, MemoryType, Role

FORMAT = "memcube"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST = "manifest.json"
MANIFEST_MAX = 16 * 1024**2  # parsed whole, in memory: its own cap, whatever the member limit
CHUNK = 1024**2  # bytes read from a member at a time
BATCH = 500  # rows per INSERT and per IN (…) check: well under SQLite's parameter limit
BATCH_BYTES = 16 * 1024**2  # and at most about this much JSON per INSERT
UNBOUNDED = 8 * 1024**2  # room in a line for the columns no setting bounds (see Rules)
BLOB_MEMBER = re.compile(r"blobs/sha256/[0-9a-f]{64}")
LIST_FIELDS = frozenset({"tags", "source_ids"})  # JSON columns holding arrays, not objects


_Enums = dict[str, type[StrEnum]]  # columns whose values must be one of an enum's


@dataclass(frozen=True)
class Member:
    """One JSONL member: a table slice and the columns each line carries."""

    key: str  # the table; the member is ``<key>.jsonl``
    table: Table
    fields: tuple[str, ...]
    scope: str  # "cube": rows with the cube's cube_id; "memory": rows of the cube's memories
    order: tuple[str, ...]
    enums: _Enums = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.key}.jsonl"


def _member(
    model: type[Any], scope: str, order: str, drop: str = "cube_id", enums: _Enums | None = None
) -> Member:
    # Every column travels except ``drop``: the cube id (the archive is one cube; import
    # sets the new one) and surrogate or derived values (autoincrement ids other than the
    # entities', which graph rows refer to; the index state). tests/test_archive.py pins
    # the resulting layout, so a schema change cannot change format 1 unnoticed.
    table = cast(Table, model.__table__)
    fields = tuple(c.key for c in table.c if c.key not in drop.split())
    return Member(table.name.removeprefix("cube_"), table, fields, scope, tuple(order.split()), enums or {})


_LIFECYCLE: _Enums = {"kind": MemoryKind, "type": MemoryType, "state": MemoryState}
#: import order: each member comes after the members its rows refer to
MEMBERS: tuple[Member, ...] = (
    _member(MemoryRow, "cube", "recorded_at id", "cube_id index_state", _LIFECYCLE),
    _member(MemoryVersionRow, "memory", "memory_id version", "id"),
    _member(EntityRow, "cube", "id"),
    _member(MemoryEntityRow, "memory", "memory_id entity_id", ""),
    _member(EdgeRow, "cube", "id", "id cube_id"),
    _member(SessionRow, "cube", "created_at id"),
    _member(MessageRow, "cube", "id", "id cube_id"),
    _member(AuditRow, "cube", "id", "id cube_id"),
    # who had access, for the record: import grants nobody but the importing owner
    _member(AclRow, "cube", "granted_at user_id", enums={"role": Role}),
    _member(BlobRow, "cube", "sha256"),
)
#: the members every archive of this format holds
NAMES = {m.name for m in MEMBERS}
#: columns that name a row of another member, and which member
REFS = {"memory_id": "memories", "entity_id": "entities", "src_id": "entities", "dst_id": "entities"}


class Entry(BaseModel):
    """A member as the manifest lists it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class CubeInfo(BaseModel):
    """The cube as the manifest records it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=200)
    description: str | None
    owner_id: str = Field(max_length=128)
    created_at: AwareDatetime
    settings: dict[str, Any]


class Manifest(BaseModel):
    """``manifest.json``, the one file a reader trusts first (strict; JSON input only).

    Unknown top-level keys are ignored on purpose: informational additions need no new
    format version. Whatever changes what the rows mean needs one.
    """

    model_config = ConfigDict(strict=True)

    format: Literal["memcube"] = "memcube"
    format_version: int = FORMAT_VERSION
    package_version: str
    created_at: AwareDatetime
    embedder_id: str | None
    cube: CubeInfo
    counts: dict[str, int]
    members: dict[str, Entry]
