"""``AsyncMemOS``: the same API for asyncio applications.

Every call runs the synchronous operation in a worker thread (``asyncio.to_thread``),
so the event loop never blocks on SQL, the index or the embedding model. ``MemOS`` is
thread-safe, so concurrent awaits are fine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from memos.chat import ChatResult
from memos.core import MemOS
from memos.errors import InvalidInput
from memos.types import AddResult, ChatImport, Cube, History, MemoryItem, Page, SearchHit, Share, User


class AsyncMemOS:
    """Async twin of :class:`memos.core.MemOS`; same arguments, awaitable results."""

    def __init__(self, home: str | Path | None = None, **kwargs: Any) -> None:
        self.sync = MemOS(home, **kwargs)

    async def __aenter__(self) -> AsyncMemOS:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def add_user(self, *args: Any, **kwargs: Any) -> User:
        return await asyncio.to_thread(self.sync.add_user, *args, **kwargs)

    async def list_users(self) -> list[User]:
        return await asyncio.to_thread(self.sync.list_users)

    async def create_cube(self, *args: Any, **kwargs: Any) -> Cube:
        return await asyncio.to_thread(self.sync.create_cube, *args, **kwargs)

    async def list_cubes(self, *args: Any, **kwargs: Any) -> list[Cube]:
        return await asyncio.to_thread(self.sync.list_cubes, *args, **kwargs)

    async def delete_cube(self, *args: Any, **kwargs: Any) -> int:
        return await asyncio.to_thread(self.sync.delete_cube, *args, **kwargs)

    async def share_cube(self, *args: Any, **kwargs: Any) -> Share:
        return await asyncio.to_thread(self.sync.share_cube, *args, **kwargs)

    async def unshare_cube(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(self.sync.unshare_cube, *args, **kwargs)

    async def add(self, *args: Any, **kwargs: Any) -> AddResult:
        return await asyncio.to_thread(self.sync.add, *args, **kwargs)

    async def search(self, *args: Any, **kwargs: Any) -> list[SearchHit]:
        return await asyncio.to_thread(self.sync.search, *args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> MemoryItem:
        return await asyncio.to_thread(self.sync.get, *args, **kwargs)

    async def list(self, *args: Any, **kwargs: Any) -> Page:
        return await asyncio.to_thread(self.sync.list_memories, *args, **kwargs)

    async def update(self, *args: Any, **kwargs: Any) -> MemoryItem:
        return await asyncio.to_thread(self.sync.update, *args, **kwargs)

    async def delete(self, *args: Any, **kwargs: Any) -> MemoryItem:
        return await asyncio.to_thread(self.sync.delete, *args, **kwargs)

    async def restore(self, *args: Any, **kwargs: Any) -> MemoryItem:
        return await asyncio.to_thread(self.sync.restore, *args, **kwargs)

    async def archive(self, *args: Any, **kwargs: Any) -> MemoryItem:
        return await asyncio.to_thread(self.sync.archive, *args, **kwargs)

    async def expire(self, *args: Any, **kwargs: Any) -> MemoryItem:
        return await asyncio.to_thread(self.sync.expire, *args, **kwargs)

    async def supersede(self, *args: Any, **kwargs: Any) -> MemoryItem:
        return await asyncio.to_thread(self.sync.supersede, *args, **kwargs)

    async def merge(self, *args: Any, **kwargs: Any) -> MemoryItem:
        return await asyncio.to_thread(self.sync.merge, *args, **kwargs)

    async def summarize_session(self, *args: Any, **kwargs: Any) -> MemoryItem:
        return await asyncio.to_thread(self.sync.summarize_session, *args, **kwargs)

    async def purge(self, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.sync.purge, *args, **kwargs)

    async def history(self, *args: Any, **kwargs: Any) -> History:
        return await asyncio.to_thread(self.sync.history, *args, **kwargs)

    async def export_cube(self, *args: Any, **kwargs: Any) -> Path:
        return await asyncio.to_thread(self.sync.export_cube, *args, **kwargs)

    async def import_cube(self, *args: Any, **kwargs: Any) -> Cube:
        return await asyncio.to_thread(self.sync.import_cube, *args, **kwargs)

    async def import_chat(self, *args: Any, **kwargs: Any) -> ChatImport:
        return await asyncio.to_thread(self.sync.import_chat, *args, **kwargs)

    async def stats(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.stats, *args, **kwargs)

    async def chat(self, message: str, **kwargs: Any) -> ChatResult:
        """``MemOS.chat`` without streaming; see :meth:`chat_stream` for pieces as they come."""
        if kwargs.get("stream"):
            raise InvalidInput("AsyncMemOS.chat does not stream; use `async for piece in mos.chat_stream(…)`")

        def run() -> ChatResult:
            result = self.sync.chat(message, **kwargs)
            assert isinstance(result, ChatResult)
            return result

        return await asyncio.to_thread(run)

    async def chat_stream(self, message: str, **kwargs: Any) -> AsyncIterator[str]:
        """Stream the answer's pieces; the generation runs in a worker thread."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def produce() -> None:
            try:
                stream = self.sync.chat(message, stream=True, **kwargs)
                for piece in stream:
                    loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
                loop.call_soon_threadsafe(queue.put_nowait, ("done", stream.result))  # type: ignore[union-attr]
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

        worker = loop.run_in_executor(None, produce)
        while True:
            kind, value = await queue.get()
            if kind == "piece":
                yield value
            elif kind == "error":
                await worker
                raise value
            else:
                await worker
                return
