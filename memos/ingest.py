"""Validation of what ``add`` receives, before anything is written.

Everything is checked up front so that a bad message in position 900 of a 1,000-message
batch leaves no partial state: either the whole call is stored, or nothing is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memos.errors import InvalidInput
from memos.timeparse import parse_timestamp

MESSAGE_KEYS = frozenset({"role", "content", "name", "id", "timestamp", "metadata"})
MAX_ID_CHARS = 200
#: users.id and cubes.id columns are 128 wide
MAX_KEY_CHARS = 128


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str
    name: str | None
    id: str | None
    timestamp: datetime | None
    metadata: dict[str, Any]


def check_text(text: object, max_chars: int, what: str = "text") -> str:
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInput(f"{what} is empty; there is nothing to remember")
    if len(text) > max_chars:
        raise InvalidInput(
            f"{what} has {len(text):,} characters, more than the limit of {max_chars:,} "
            "(split it, or raise max_text_chars in the configuration)"
        )
    return text


def check_metadata(metadata: object, what: str = "metadata") -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise InvalidInput(f"{what} must be a dict with string keys")
    import json

    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be JSON-serialisable: {exc}") from exc
    return dict(metadata)


def check_tags(tags: object) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str) or not all(isinstance(t, str) and t.strip() for t in tags):  # type: ignore[attr-defined]
        raise InvalidInput("tags must be a list of non-empty strings")
    return [t.strip() for t in tags]  # type: ignore[attr-defined]


def check_id(value: object, what: str, max_chars: int = MAX_ID_CHARS) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if not text or len(text) > max_chars:
        raise InvalidInput(f"{what} must be 1–{max_chars} characters")
    return text


def parse_messages(messages: object, max_chars: int, max_count: int) -> list[Message]:
    """Validate a list of chat messages; raise :class:`InvalidInput` naming the bad one."""
    if not isinstance(messages, list | tuple):
        raise InvalidInput("messages must be a list of {role, content, …} dicts")
    if not messages:
        raise InvalidInput("messages is empty; there is nothing to remember")
    if len(messages) > max_count:
        raise InvalidInput(f"{len(messages):,} messages in one call; the limit is {max_count:,}")
    out: list[Message] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InvalidInput(f"{where} must be a dict with 'role' and 'content', got {type(m).__name__}")
        unknown = set(m) - MESSAGE_KEYS
        if unknown:
            raise InvalidInput(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(MESSAGE_KEYS)}")
        role = m.get("role")
        if not isinstance(role, str) or not role.strip() or len(role) > 32:
            raise InvalidInput(f"{where}.role must be a short non-empty string such as 'user'")
        content = check_text(m.get("content"), max_chars, f"{where}.content")
        name = m.get("name")
        if name is not None:
            name = check_id(name, f"{where}.name")
        mid = m.get("id")
        if mid is not None:
            mid = check_id(mid, f"{where}.id")
        try:
            ts = parse_timestamp(m.get("timestamp"))
        except InvalidInput as exc:
            raise InvalidInput(f"{where}.timestamp: {exc}") from exc
        out.append(
            Message(
                role=role.strip(),
                content=content,
                name=name,
                id=mid,
                timestamp=ts,
                metadata=check_metadata(m.get("metadata"), f"{where}.metadata"),
            )
        )
    return out
