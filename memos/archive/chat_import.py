"""Importing a chat log as episodes (:meth:`MemOS.import_chat`, ``memos import-chat``).

:func:`read_chat` reads the file with :func:`~memos.archive.chatlog.load_chat` and checks
every message as ``add`` will, with the home's limits, before anything is written. ``add``
checks one batch at a time, so a bad message late in a file would otherwise fail after the
batches before it were committed, and be named by its index in its batch; here each
session is checked whole (no count limit: the batches keep to it), so the error names
``messages[i]`` by its place in the file (in its session, if several). :func:`import_chat`
then adds each session in batches, one ``add`` call per batch; message ids make a
re-import a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from memos.archive.chatlog import ChatSession, load_chat
from memos.errors import InvalidInput
from memos.plaintext.validation import parse_messages
from memos.types import AddResult, ChatImport

if TYPE_CHECKING:
    from memos.config import Settings

#: told where an import is: ``(session_id, 0)`` as each session starts, ``(session_id, n)``
#: after each batch of ``n`` messages is stored
Progress = Callable[[str | None, int], None]


@dataclass(frozen=True, slots=True)
class ChatLog:
    """A chat log read and checked by :func:`read_chat`: its sessions, each with the session
    id its messages are stored under (the file's, else the default one)."""

    path: Path
    sessions: list[ChatSession]

    @property
    def messages(self) -> int:
        return sum(len(s.messages) for s in self.sessions)


def read_chat(path: str | Path, settings: Settings, *, session_id: str | None = None) -> ChatLog:
    """Read a chat log and check every message against ``settings``' limits, writing nothing.

    ``session_id`` is the session of the messages outside any session of the file."""
    sessions = load_chat(path)
    checked = []
    for n, s in enumerate(sessions):
        where = f"session {n + 1} of {len(sessions)}" + (f" ({s.id!r})" if s.id is not None else "")
        sid = s.id if s.id is not None else session_id
        if sid is not None and not sid.strip():
            raise InvalidInput(f"{where}: the session id is empty")
        if s.messages:
            try:
                parse_messages(s.messages, settings.max_text_chars, len(s.messages), limits=settings.limits)
            except InvalidInput as exc:
                if len(sessions) == 1:
                    raise
                raise InvalidInput(f"{where}: {exc}") from exc
        checked.append(ChatSession(id=sid, messages=s.messages))
    return ChatLog(path=Path(path), sessions=checked)


def import_chat(
    chat: str | Path | ChatLog,
    add: Callable[..., AddResult],
    settings: Settings,
    *,
    user_id: str,
    cube_id: str,
    session_id: str | None = None,
    batch_size: int = 100,
    extract: bool | Literal["defer"] = True,
    progress: Progress | None = None,
) -> ChatImport:
    """Add a chat log session by session through ``add`` (the facade's), checked whole first."""
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(chat, ChatLog):
        if session_id is not None:
            raise InvalidInput(
                "session_id applies to a chat file; a ChatLog has its session ids already "
                "(pass session_id to read_chat)"
            )
        log = chat
    else:
        log = read_chat(chat, settings, session_id=session_id)
    size = min(batch_size, settings.max_messages_per_add)  # every batch within add's limit
    done = ChatImport(file=str(log.path), sessions=len(log.sessions), messages=log.messages, cube_id=cube_id)
    for s in log.sessions:
        if progress is not None:
            progress(s.id, 0)
        for start in range(0, len(s.messages), size):
            batch = s.messages[start : start + size]
            result = add(batch, user_id=user_id, cube_id=cube_id, session_id=s.id, extract=extract)
            done.added += len(result.memories)
            done.skipped += len(batch) - len(result.memories)
            done.derived += len(result.derived)
            done.extraction_failures += result.extraction_failures
            if progress is not None:
                progress(s.id, len(batch))
    return done
