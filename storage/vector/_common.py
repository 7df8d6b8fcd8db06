"""What both Qdrant backends share: names, key syntax, id and sparse-vector checks."""

from __future__ import annotations

import re
import uuid

from memos.errors import InvalidFilter, InvalidInput
from memos.protocols import SparseVector

DENSE = "dense"
LEXICAL = "lexical"
SCROLL_PAGE = 1024
# Qdrant's payload key syntax: dotted segments, each a bare or "quoted" name with optional
# [] / [n] array steps. Checked up front so a bad key is the caller's InvalidFilter, not a
# backend failure.
_SEGMENT = r'(?:[^\s."\[\]]+|"[^"]*")(?:\[\d*\])*'
_KEY = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")

# Payload indexes: keyword fields filtered by the kernel, and the event time.
KEYWORD_FIELDS = ("type", "speaker", "session_id", "tags")
FLOAT_FIELDS = ("ts",)


def point_id(memory_id: str) -> str:
    """Canonical UUID string; Qdrant returns ids in this form."""
    try:
        return str(uuid.UUID(str(memory_id)))
    except ValueError as exc:
        raise InvalidInput(f"memory id {memory_id!r} is not a UUID") from exc


def check_sparse(vector: SparseVector, what: str) -> None:
    # Qdrant servers reject repeated indices and the embedded engine silently keeps them;
    # refuse them in both so the two backends behave the same.
    if len(vector.indices) != len(vector.values) or len(set(vector.indices)) != len(vector.indices):
        raise InvalidInput(f"{what}: sparse vector needs unique indices, one value each")


def check_key(key: str) -> None:
    if not _KEY.fullmatch(key):
        raise InvalidFilter(f"malformed filter key {key!r}")
