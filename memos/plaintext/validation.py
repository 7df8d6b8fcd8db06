"""Validation of what ``add`` receives, before anything is written.

Everything is checked up front so that a bad message in position 900 of a 1,000-message
batch leaves no partial state: either the whole call is stored, or nothing is. Strings must
be valid Unicode (no lone surrogates), numbers finite, and sizes within the settings'
limits (``max_text_chars``, :class:`memos.config.Limits`). Import checks every archived
row with the same functions, so an archive cannot carry in what ``add`` would refuse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memos.config import Limits
from memos.errors import InvalidInput
from memos.extract.timeparse import parse_timestamp

MESSAGE_KEYS = frozenset({"role", "content", "name", "id", "timestamp", "metadata"})
MAX_ID_CHARS = 200
#: users.id and cubes.id columns are 128 wide
MAX_KEY_CHARS = 128
_DEFAULT = Limits()


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str
    name: str | None
    id: str | None
    timestamp: datetime | None
    metadata: dict[str, Any]


def check_unicode(value: str, what: str) -> str:
    """Refuse a lone surrogate (``"\\ud800"``, a JSON ``\\ud800`` escape, a bad decode):
    it is not Unicode text, and neither the database nor the embedder can encode it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{what} holds a lone surrogate ({value[exc.start]!r} at character {exc.start}), which is "
            "not valid Unicode; fix how the text was decoded"
        ) from None
    return value


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
    return check_unicode(text, what)


def check_metadata(metadata: object, what: str = "metadata", *, limits: Limits = _DEFAULT) -> dict[str, Any]:
    """A JSON object within ``limits``: finite numbers, valid Unicode, bounded depth and size."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise InvalidInput(f"{what} must be a dict with string keys")
    check_json(metadata, what, limits)
    try:  # what the walk does not judge: values of other types, keys that are not strings
        size = len(json.dumps(metadata, allow_nan=False, ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be JSON-serialisable: {exc}") from exc
    if size > limits.metadata_bytes:
        raise _too_large(what, size, limits, True)
    return dict(metadata)


def _too_large(what: str, size: int | None, limits: Limits, named: bool) -> InvalidInput:
    said = f"{size:,} bytes as JSON, more than" if size is not None else "larger as JSON than"
    hint = " (setting max_metadata_bytes); keep large content in the text or elsewhere" if named else ""
    return InvalidInput(f"{what} is {said} the limit of {limits.metadata_bytes:,} bytes{hint}")


def check_json(value: Any, what: str, limits: Limits, *, named: bool = True) -> None:
    """Walk ``value`` without recursion: json.dumps would recurse (and raise RecursionError)
    on deep nesting, and would accept NaN, which is not JSON and which the index refuses.
    The walk counts a lower bound of the JSON size, so a huge value is refused unread.
    ``named``: the messages name the settings (``limits`` are the metadata's)."""
    budget = limits.metadata_bytes
    # (value, depth, path): the path is a (parent path, key) chain, spelled out only for an error
    stack: list[tuple[Any, int, Any]] = [(value, 1, None)]
    while stack:
        value, depth, path = stack.pop()
        budget -= len(value) + 2 if isinstance(value, str) else 1
        if budget < 0:
            raise _too_large(what, None, limits, named)
        if isinstance(value, str):
            check_unicode(value, _where(what, path))
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(
                f"{_where(what, path)} is {value}, which JSON cannot hold; store a string or null instead"
            )
        elif isinstance(value, dict | list | tuple):
            if depth > limits.metadata_depth:
                hint = " (setting max_metadata_depth)" if named else ""
                raise InvalidInput(f"{what} is nested more than {limits.metadata_depth} levels deep{hint}")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    budget -= len(key) + 3
                    check_unicode(key, f"a key of {_where(what, path)}")
                stack.append((item, depth + 1, (path, key)))


def _where(what: str, path: Any) -> str:
    keys: list[Any] = []
    while path is not None:
        path, key = path
        keys.append(key)
    return what + "".join(f"[{k!r}]" for k in reversed(keys))


def check_tags(tags: object, *, limits: Limits = _DEFAULT) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str | bytes | dict) or not isinstance(tags, Iterable):
        raise InvalidInput("tags must be a list of non-empty strings")
    items = list(tags)
    if len(items) > limits.tags:
        raise InvalidInput(f"{len(items):,} tags, more than the limit of {limits.tags:,} (setting max_tags)")
    out = []
    for i, t in enumerate(items):
        if not isinstance(t, str) or not t.strip():
            raise InvalidInput("tags must be a list of non-empty strings")
        t = check_unicode(t.strip(), f"tags[{i}]")
        if len(t) > limits.tag_chars:
            raise InvalidInput(
                f"tags[{i}] has {len(t):,} characters, more than the limit of {limits.tag_chars:,} "
                "(setting max_tag_chars)"
            )
        out.append(t)
    return out


def check_key(value: object, what: str) -> str:
    """An id to look up (a user, cube or memory): a non-empty string the database can encode."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a non-empty string")
    return check_unicode(value, what)


def check_session_id(session_id: object) -> None:
    if session_id is None:
        return
    if not isinstance(session_id, str) or not session_id.strip() or len(session_id) > MAX_ID_CHARS:
        raise InvalidInput(f"session_id must be a non-empty string of at most {MAX_ID_CHARS} characters")
    check_unicode(session_id, "session_id")


def check_id(value: object, what: str, max_chars: int = MAX_ID_CHARS) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    text = str(value).strip()
    if not text or len(text) > max_chars:
        raise InvalidInput(f"{what} must be 1–{max_chars} characters")
    return check_unicode(text, what)


def parse_messages(
    messages: object,
    max_chars: int,
    max_count: int,
    *,
    limits: Limits = _DEFAULT,
    base: dict[str, Any] | None = None,
) -> list[Message]:
    """Validate a list of chat messages; raise :class:`InvalidInput` naming the bad one.

    ``base`` is the call's metadata, which each message's extends: the two together are
    what is stored, so the limits apply to them together."""
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
        check_unicode(role, f"{where}.role")
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
        metadata = check_metadata(m.get("metadata"), f"{where}.metadata", limits=limits)
        if base and metadata:
            check_metadata({**base, **metadata}, f"{where}.metadata with the call's metadata", limits=limits)
        out.append(
            Message(
                role=role.strip(),
                content=content,
                name=name,
                id=mid,
                timestamp=ts,
                metadata=metadata,
            )
        )
    return out
