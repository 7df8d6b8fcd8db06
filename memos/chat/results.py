"""What ``MemOS.chat`` hands back: the result, the memories used, the timings, the stream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, Field


class UsedMemory(BaseModel):
    id: str
    cube_id: str
    text: str
    score: float


class ChatTimings(BaseModel):
    retrieval_ms: float = 0.0
    assemble_ms: float = 0.0
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    generate_ms: float = 0.0
    write_ms: float = 0.0
    total_ms: float = 0.0


class ChatResult(BaseModel):
    """What one ``chat`` call did."""

    answer: str
    session_id: str
    cube_id: str = Field(description="the cube the exchange was written to")
    memories: list[UsedMemory] = Field(default_factory=list, description="memories placed in the prompt")
    history_turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    context_budget: int = 0
    finish_reason: str = "stop"
    runtime: dict[str, str] = Field(default_factory=dict)
    timings: ChatTimings = Field(default_factory=ChatTimings)
    written: list[str] = Field(default_factory=list, description="episode ids of the two turns")
    extracted: list[str] = Field(default_factory=list, description="facts the extractors wrote")
    reader: dict[str, Any] | None = Field(None, description="the LLM reader's report, when one ran")
    prompt: str | None = Field(None, description="the exact prompt text (chat(..., explain=True))")
    activation: dict[str, Any] | None = Field(
        None, description="the compiled KV prefix offered: id, n_tokens, memory_ids, used, and why not"
    )
    parametric: list[dict[str, Any]] = Field(
        default_factory=list, description="the LoRA adapters applied: [{id, cube_id, name}]"
    )

    @property
    def memory_ids(self) -> list[str]:
        return [m.id for m in self.memories]


class ChatStream:
    """A streaming chat answer: iterate for text pieces; ``result`` once it is done.

    The exchange is written back when the stream ends — also when the caller stops early,
    in which case the partial answer is kept with ``metadata.interrupted = true``.
    """

    def __init__(self, pieces: Callable[[ChatStream], Iterator[str]]) -> None:
        """``pieces`` makes the iterator of text pieces; it sets ``result`` when it ends."""
        self.result: ChatResult | None = None
        self._pieces = pieces(self)

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def read(self) -> ChatResult:
        for _ in self:
            pass
        assert self.result is not None
        return self.result
