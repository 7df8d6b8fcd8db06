"""The text a KV prefix holds: how memories read in a prompt, and where a prefix ends.

``MemOS.chat`` builds its system message with the same functions, so the prompt of a
chat with these memories begins with exactly the compiled text (the chat checks it does
before it uses a prefix).
"""

from __future__ import annotations

from collections.abc import Sequence

from memos.protocols import Runtime
from memos.runtime import ChatMessage
from memos.types import MemoryItem

SENTINEL = "\u2063MEMOS-SYSTEM\u2063"


def memory_text(m: MemoryItem) -> str:
    """One memory as a line of the prompt's ``Memories:`` block."""
    when = m.valid_from or m.recorded_at
    date = f"({when.date().isoformat()}) " if when else ""
    speaker = (m.provenance.speaker or m.provenance.role) if m.type == "episode" else None
    who = f"{speaker}: " if speaker else ""
    return f"- {date}{who}{m.text.strip()}"


def memories_block(system_prompt: str, lines: Sequence[str]) -> str:
    """The system message's content: the prompt, then the memories, one per line."""
    if not lines:
        return system_prompt
    return system_prompt + "\n\nMemories:\n" + "\n".join(lines)


def prefix_text(runtime: Runtime, system_prompt: str, lines: Sequence[str]) -> str:
    """The rendered prompt up to the end of the last compiled memory line.

    Rendered through the runtime's own template with a sentinel as the system content,
    so the prefix is exactly how every chat prompt with these memories begins."""
    head = runtime.render([ChatMessage("system", SENTINEL), ChatMessage("user", "x")]).split(SENTINEL)[0]
    return head + memories_block(system_prompt, lines)
