"""A minimal chatbot with long-term memory, embedding the memos SDK.

    python examples/chatbot.py            # talk; Ctrl-D to leave
    MEMOS_RUNTIME__NAME=llama_cpp python examples/chatbot.py

Everything you say is remembered in your cube; come back tomorrow (a new session) and the
bot still knows. Memories live in ./chatbot-home (SQLite + Qdrant Edge).
"""

from __future__ import annotations

import sys

from memos.core import MemOS
from memos.errors import NotFound


def main() -> None:
    with MemOS(home="chatbot-home") as mos:
        user = "me"
        try:
            mos.get_user(user)
        except NotFound:
            mos.add_user(user, name=input("Your name? ").strip() or "friend")
        cubes = [c for c in mos.list_cubes(user) if c.owner_id == user]
        cube = cubes[0] if cubes else mos.create_cube(user, "chatbot")
        session = None  # a new session each run; pass an id to continue one
        print("Say something (Ctrl-D to leave).")
        for line in sys.stdin:
            if not line.strip():
                continue
            stream = mos.chat(line.strip(), user_id=user, cube_ids=[cube.id], session_id=session, stream=True)
            for piece in stream:
                print(piece, end="", flush=True)
            result = stream.result
            session = result.session_id
            print(f"\n  [{len(result.memories)} memories, first token {result.timings.ttft_ms:.0f} ms]")


if __name__ == "__main__":
    main()
