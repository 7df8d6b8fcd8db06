"""The manifest of a compiled KV prefix: a ``blobs`` row of kind ``activation``.

The row names the blob (its sha256), the cube, and in ``manifest`` what the prefix holds:
the runtime fingerprint, the LoRA adapters it was computed under, every memory id and
version in prefix order, each segment's token span, the token ids and text (scrubbed when
a memory inside is purged), and its state.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from memos.errors import InvalidInput, NotFound
from memos.storage.relational.models import BlobRow

KIND = "activation"


class Segment(BaseModel):
    name: str
    start: int = Field(description="first token of the segment in the prefix")
    end: int = Field(description="one past its last token")
    memory_ids: list[str]


class ActivationInfo(BaseModel):
    """The manifest of one compiled KV prefix."""

    id: str = Field(description="sha256 of the blob")
    cube_id: str
    name: str
    state: Literal["ready", "stale", "purged"]
    stale_reason: str | None = None
    fingerprint: dict[str, str]
    memories: list[dict[str, Any]] = Field(description="[{id, version}] in prefix order")
    adapters: list[str] = Field(
        default_factory=list, description="ids of the LoRA adapters it was computed under (empty: none)"
    )
    segments: list[Segment]
    n_tokens: int
    bytes: int
    bytes_per_token: float
    compile_ms: float
    created_at: datetime
    system_prompt: str

    @property
    def memory_ids(self) -> list[str]:
        return [m["id"] for m in self.memories]


def info(sha: str, cube_id: str, size: int, created: datetime, m: Mapping[str, Any]) -> ActivationInfo:
    n = int(m.get("n_tokens", 0))
    return ActivationInfo(
        id=sha,
        cube_id=cube_id,
        name=m.get("name", "default"),
        state=m.get("state", "ready"),
        stale_reason=m.get("stale_reason"),
        fingerprint=dict(m.get("fingerprint", {})),
        memories=list(m.get("memories", [])),
        adapters=list(m.get("adapters", [])),
        segments=[Segment(**sg) for sg in m.get("segments", [])],
        n_tokens=n,
        bytes=size,
        bytes_per_token=round(size / n, 1) if n else 0.0,
        compile_ms=float(m.get("compile_ms", 0.0)),
        created_at=created,
        system_prompt=m.get("system_prompt", ""),
    )


def info_of(row: BlobRow, cube_id: str | None = None) -> ActivationInfo:
    return info(row.sha256, cube_id or row.cube_id or "", row.size, row.created_at, row.manifest)


def rows(s: Session, cube_id: str) -> list[BlobRow]:
    """The cube's prefixes."""
    return list(s.scalars(select(BlobRow).where(BlobRow.kind == KIND, BlobRow.cube_id == cube_id)))


def find(s: Session, kv_id: str) -> BlobRow:
    """The prefix named by ``kv_id`` or an unambiguous beginning of it."""
    if not isinstance(kv_id, str) or len(kv_id) < 6:
        raise InvalidInput("give an activation memory id (at least 6 characters of it)")
    found = list(
        s.scalars(select(BlobRow).where(BlobRow.kind == KIND, BlobRow.sha256.startswith(kv_id.lower())))
    )
    if len(found) != 1:
        raise NotFound(
            f"no activation memory {kv_id!r}" if not found else f"{kv_id!r} is ambiguous; give more of it"
        )
    return found[0]
