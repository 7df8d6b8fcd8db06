"""What both Qdrant backends share: names, key syntax, id and sparse-vector checks."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

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
KEYWORD_FIELDS = ("type", "speaker", "role", "session_id", "tags")
FLOAT_FIELDS = ("ts",)
#: ``metadata.<key>`` fields get a payload index when first seen, up to this many: a
#: filter on an unindexed field makes the engine read every candidate's payload.
MAX_METADATA_INDEXES = 32
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def metadata_index_fields(payloads: Iterable[Mapping[str, Any]], present: set[str]) -> dict[str, str]:
    """The ``metadata.<key>`` fields of ``payloads`` that deserve a new payload index.

    Maps each to ``"keyword"`` (string values, or lists of strings) or ``"integer"``
    (integers and booleans, which the indexes store as 0/1), judged by the first value
    seen; other values (floats, objects) and keys that are not plain names are left to
    payload reads. Never more than :data:`MAX_METADATA_INDEXES` metadata fields in all.
    """
    budget = MAX_METADATA_INDEXES - sum(1 for k in present if k.startswith("metadata."))
    out: dict[str, str] = {}
    for payload in payloads:
        meta = payload.get("metadata")
        if not isinstance(meta, Mapping):
            continue
        for key, value in meta.items():
            field = f"metadata.{key}"
            if field in present or field in out or budget <= 0 or not _PLAIN_KEY.fullmatch(str(key)):
                continue
            sample = value[0] if isinstance(value, list) and value else value
            if isinstance(sample, str):
                out[field] = "keyword"
            elif isinstance(sample, int):  # bool included
                out[field] = "integer"
            else:
                continue
            budget -= 1
    return out


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
