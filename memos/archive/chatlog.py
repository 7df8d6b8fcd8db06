"""Reading chat logs from files: the formats ``memos import-chat`` and the demo accept.

- a JSON list of messages ``[{role, content, name?, id?, timestamp?}, …]``;
- JSONL, one message per line (a ``session_id`` key per line groups them);
- the session format ``{"sessions": [{"id", "date"?, "messages": [...]}, ...]}``, where a
  session's ``date`` is the default timestamp of its messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memos.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class ChatSession:
    id: str | None
    messages: list[dict[str, Any]]


def load_chat(path: str | Path) -> list[ChatSession]:
    """Parse a chat log into sessions of message dicts (validated later by ``add``)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"no such file: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".jsonl":
        return _from_jsonl(text, p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # a .json file may still hold JSON lines
        try:
            return _from_jsonl(text, p)
        except InvalidInput:
            raise InvalidInput(f"{p} is neither JSON nor JSON lines: {exc}") from exc
    if isinstance(data, list):
        return [ChatSession(id=None, messages=_messages(data, p))]
    if isinstance(data, dict) and isinstance(data.get("sessions"), list):
        out = []
        for i, sess in enumerate(data["sessions"]):
            if not isinstance(sess, dict) or not isinstance(sess.get("messages"), list):
                raise InvalidInput(f"{p}: sessions[{i}] needs a 'messages' list")
            msgs = _messages(sess["messages"], p)
            date = sess.get("date")
            if date is not None:
                msgs = [{**m, "timestamp": m.get("timestamp", date)} for m in msgs]
            sid = sess.get("id")
            out.append(ChatSession(id=str(sid) if sid is not None else None, messages=msgs))
        return out
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        return [ChatSession(id=data.get("session_id"), messages=_messages(data["messages"], p))]
    raise InvalidInput(f"{p}: expected a list of messages, {{'messages': [...]}} or {{'sessions': [...]}}")


def _messages(items: list[Any], p: Path) -> list[dict[str, Any]]:
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise InvalidInput(f"{p}: message {i} is not an object")
    return [dict(m) for m in items]


def _from_jsonl(text: str, p: Path) -> list[ChatSession]:
    sessions: dict[str | None, list[dict[str, Any]]] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            m = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{p}:{n}: not valid JSON: {exc.msg}") from exc
        if not isinstance(m, dict):
            raise InvalidInput(f"{p}:{n}: each line must be a message object")
        sid = m.pop("session_id", None)
        sessions.setdefault(str(sid) if sid is not None else None, []).append(m)
    if not sessions:
        raise InvalidInput(f"{p} holds no messages")
    return [ChatSession(id=k, messages=v) for k, v in sessions.items()]
