"""What the kernel and the model runtimes speak: messages, generation parameters and
streams, fingerprints, and the documented prompt format.

A runtime runs one language model: it tokenizes, renders chat messages into a prompt,
and generates text as a stream. Its Protocol is :class:`memos.protocols.Runtime`; three
implementations live in ``memos.adapters.runtimes`` (``transformers``, ``llama_cpp``,
``openai``, sharing :mod:`memos.adapters.runtimes.local`) and are chosen by name from the
settings through the ``memos.runtimes`` entry-point group.

Every runtime has a :class:`Fingerprint` — runtime, model id, weights hash, dtype,
tokenizer hash — so that artifacts built for one model (KV caches, LoRA adapters) are
never applied to another.

Prompt format. Instruction models use their own chat template. A model without one (a
base model such as Gemma 3 270M) gets the *plain format* of :func:`plain_prompt`::

    <bos>System: {system}

    User: {user message}
    Assistant: {assistant message}
    User: {user message}
    Assistant:

and generation stops at a new ``User:``/``System:`` line (:data:`PLAIN_STOPS`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from memos.errors import InvalidInput

__all__ = [
    "PLAIN_STOPS",
    "ChatMessage",
    "Fingerprint",
    "Generation",
    "GenerationParams",
    "GenerationStats",
    "RuntimeInfo",
    "chat_messages",
    "plain_prompt",
    "render_template",
    "safetensors_metadata",
    "sha256_file",
]

Role = Literal["system", "user", "assistant"]

#: stop sequences of the plain prompt format
PLAIN_STOPS = ("\nUser:", "\nSystem:")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def chat_messages(messages: Sequence[ChatMessage | Mapping[str, Any]]) -> list[ChatMessage]:
    """Validate ``{"role", "content"}`` dicts (or ChatMessages) into ChatMessages."""
    out: list[ChatMessage] = []
    for i, m in enumerate(messages):
        if isinstance(m, ChatMessage):
            out.append(m)
            continue
        if not isinstance(m, Mapping):
            raise InvalidInput(f"message {i} must be a dict with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant"):
            raise InvalidInput(f"message {i}: role must be system, user or assistant, not {role!r}")
        if not isinstance(content, str):
            raise InvalidInput(f"message {i}: content must be a string")
        out.append(ChatMessage(role, content))
    if not out:
        raise InvalidInput("at least one message is needed")
    return out


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What a KV cache or an adapter must match to be applied to a model."""

    runtime: str
    model_id: str
    weights_sha256: str
    dtype: str
    tokenizer_sha256: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @property
    def key(self) -> str:
        """A short stable digest of all five fields."""
        blob = json.dumps(self.as_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(slots=True)
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: time from the call to the first generated token (prompt processing included)
    ttft_ms: float = 0.0
    #: generated tokens per second after the first one
    tokens_per_s: float = 0.0
    total_ms: float = 0.0
    finish_reason: Literal["stop", "length", "interrupted"] = "stop"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    #: a JSON schema the output must follow; runtimes that can constrain decoding do
    #: (llama.cpp grammar, the server's ``response_format``), the others leave it to the
    #: caller to validate and retry
    json_schema: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidInput("max_tokens must be a positive integer")
        if self.temperature < 0:
            raise InvalidInput("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise InvalidInput("top_p must be in (0, 1]")


class Generation:
    """A streaming generation: iterate for text pieces; ``text`` and ``stats`` after.

    ``source`` yields ``(text_piece, n_tokens)`` pairs; this class applies the stop
    sequences (text after a stop is never emitted, a piece that might begin a stop is
    held back until it is decided) and measures TTFT and tokens/s.
    """

    def __init__(
        self,
        source: Callable[[], Iterator[tuple[str, int]]],
        *,
        stop: Sequence[str] = (),
        prompt_tokens: int = 0,
        max_tokens: int | None = None,
    ) -> None:
        self._source = source
        self._stop = tuple(s for s in stop if s)
        self._max_tokens = max_tokens
        self.stats = GenerationStats(prompt_tokens=prompt_tokens)
        self.text = ""
        self.done = False
        self._iter: Iterator[str] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._iter is None:
            self._iter = self._run()
        return self._iter

    def read(self) -> str:
        """Consume the whole stream; return the text."""
        for _ in self:
            pass
        return self.text

    def _run(self) -> Iterator[str]:
        start = time.perf_counter()
        first: float | None = None
        emitted = 0  # characters of self._buffer already yielded
        buffer = ""
        tokens = 0
        finish: Literal["stop", "length", "interrupted"] = "length"
        gen = self._source()
        try:
            for piece, n in gen:
                if n and first is None:
                    first = time.perf_counter()
                tokens += n
                buffer += piece
                cut = _find_stop(buffer, self._stop)
                if cut is not None:
                    buffer = buffer[:cut]
                    finish = "stop"
                    break
                safe = len(buffer) - _held_back(buffer, self._stop)
                if safe > emitted:
                    start_at, emitted = emitted, safe
                    yield buffer[start_at:safe]
                if self._max_tokens is not None and tokens >= self._max_tokens:
                    finish = "length"
                    break
            else:
                finish = "stop" if self._max_tokens is None or tokens < self._max_tokens else "length"
            if len(buffer) > emitted:
                start_at, emitted = emitted, len(buffer)
                yield buffer[start_at:]
        except GeneratorExit:
            finish = "interrupted"
            raise
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()
            end = time.perf_counter()
            self.text = buffer[:emitted] if finish == "interrupted" else buffer
            self.done = True
            st = self.stats
            st.completion_tokens = tokens
            st.finish_reason = finish
            st.total_ms = (end - start) * 1000
            st.ttft_ms = ((first or end) - start) * 1000
            if first is not None and tokens > 1 and end > first:
                st.tokens_per_s = (tokens - 1) / (end - first)


def _find_stop(text: str, stops: Sequence[str]) -> int | None:
    best: int | None = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or i < best):
            best = i
    return best


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters could be the start of a stop sequence."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


def plain_prompt(messages: Sequence[ChatMessage], bos: str = "") -> str:
    """The documented prompt format for models without a chat template."""
    parts: list[str] = []
    for m in messages:
        label = {"system": "System", "user": "User", "assistant": "Assistant"}[m.role]
        sep = "\n\n" if m.role == "system" else "\n"
        parts.append(f"{label}: {m.content.strip()}{sep}")
    return bos + "".join(parts) + "Assistant:"


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """What a runtime tells about itself (``memos runtime info``)."""

    fingerprint: Fingerprint
    context_length: int
    chat_template: bool
    device: str
    capabilities: frozenset[str] = field(default_factory=frozenset)


def sha256_file(path: str | Any, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def render_template(template: str, messages: Sequence[ChatMessage], *, bos: str = "", eos: str = "") -> str:
    """Render a model's Jinja chat template the way transformers does (sandboxed,
    ``trim_blocks``/``lstrip_blocks``, generation prompt added), so the local runtimes
    build the same prompt text from the same template."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise InvalidInput(f"the model's chat template refused the messages: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=[m.as_dict() for m in messages],
        add_generation_prompt=True,
        bos_token=bos,
        eos_token=eos,
    )


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file held in memory."""
    if len(data) < 8:
        raise InvalidInput("not a safetensors file: too short")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise InvalidInput("not a safetensors file: bad header length")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as exc:
        raise InvalidInput("not a safetensors file: bad header") from exc
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}

