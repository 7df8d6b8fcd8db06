"""The memory-augmented forward pass: ``MemOS.chat``.

1. retrieve plaintext memories for the message from the cubes the user may read;
2. assemble the prompt within the model's context budget — system prompt with the
   memories, recent turns of the session, the message (:func:`assemble`);
3. generate on the runtime (streaming or not);
4. write back: the user's turn and the answer as episodes of the session (the answer
   without extraction: a model's words are not facts about the user) and the LLM
   reader's decisions when ``extractor = "llm"``. (Access statistics of the retrieved
   memories are kept by ``search`` itself.)

Activation (KV prefix) and parametric (LoRA) memory plug into steps 2 and 3.
"""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, overload

from pydantic import BaseModel, Field
from sqlalchemy import select

from memos import acl
from memos.activation import ActivationMemory, memories_block, memory_text
from memos.errors import ContextOverflow, InvalidInput
from memos.events import Event, EventBus, EventKind
from memos.extract import Entity
from memos.extract._text import sentences
from memos.extract.rules import RuleExtractor
from memos.parametric import ParametricMemory
from memos.plaintext.validation import check_text
from memos.protocols import Runtime
from memos.runtime import ChatMessage, Generation, GenerationParams
from memos.storage.relational.models import CubeRow, MemoryRow, MessageRow
from memos.types import SearchHit

if TYPE_CHECKING:
    from memos.config import Settings
    from memos.extract.llm import ReaderReport


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


@dataclass
class Assembled:
    messages: list[ChatMessage]
    memories: list[SearchHit]
    history: list[ChatMessage]
    prompt_tokens: int
    budget: int


def _assistant_turn(hit: SearchHit) -> bool:
    m = hit.memory
    return m.type == "episode" and m.provenance.role == "assistant"


def tells_nothing(hit: SearchHit) -> bool:
    """A user's turn made only of questions that name nothing but their speaker.

    "And what does she do?" or "Where does my sister live?" asks; it holds nothing to
    remember, yet it matches a new question better than any fact does (it is worded like
    one). A question that names someone or something ("Should I take my dog Rex to the
    vet?") carries a fact and is not one of these, nor is a turn that also states
    something ("Is it serious? He keeps scratching.").
    """
    m = hit.memory
    if m.type != "episode" or m.provenance.role != "user":
        return False
    parts = [p for p in sentences(m.text) if p.text.strip()]
    if not parts or not all(p.is_question for p in parts):
        return False
    speaker = m.provenance.speaker
    own = Entity(speaker, "person").key if speaker and speaker.strip() else None
    return all(e.key == own for e in RuleExtractor().extract(m.text, speaker=speaker).entities)


def memory_line(hit: SearchHit) -> str:
    return memory_text(hit.memory)


def system_text(prompt: str, hits: Sequence[SearchHit], fixed: Sequence[str] = ()) -> str:
    """The system message: the prompt, the compiled (prefix) memory lines, then the retrieved."""
    return memories_block(prompt, [*fixed, *(memory_line(h) for h in hits)])


def assemble(
    runtime: Runtime,
    *,
    system_prompt: str,
    message: str,
    hits: Sequence[SearchHit],
    history: Sequence[ChatMessage],
    max_tokens: int,
    fixed_lines: Sequence[str] = (),
    slack: int = 0,
) -> Assembled:
    """Fit system prompt, memories, history and the message into the context budget.

    The message and the system prompt must fit, or :class:`ContextOverflow`. Then, by
    priority: memories in rank order up to half of what is left, recent turns newest
    first, then the remaining memories — each kept only if the whole rendered prompt
    still fits (counted by the runtime's own tokenizer), so the budget always holds.
    """
    budget = runtime.context_length - max_tokens - slack
    user = ChatMessage("user", message)

    def count(mem: Sequence[SearchHit], hist: Sequence[ChatMessage]) -> int:
        msgs = [ChatMessage("system", system_text(system_prompt, mem, fixed_lines)), *hist, user]
        return runtime.count_tokens(runtime.render(msgs))

    base = count([], [])
    if base > budget:
        raise ContextOverflow(
            f"the message needs {base} tokens with the system prompt, but the context budget is "
            f"{budget} ({runtime.context_length} minus {max_tokens} for the answer); shorten it"
        )
    kept: list[SearchHit] = []
    pending = list(hits)
    half = base + (budget - base) // 2
    while pending and count([*kept, pending[0]], []) <= half:
        kept.append(pending.pop(0))
    hist: list[ChatMessage] = []
    for turn in reversed(history):
        if count(kept, [turn, *hist]) > budget:
            break
        hist.insert(0, turn)
    while pending and count([*kept, pending[0]], hist) <= budget:
        kept.append(pending.pop(0))
    # a template may start the history with a user turn only; drop a dangling assistant turn
    while hist and hist[0].role == "assistant":
        hist.pop(0)
    messages = [ChatMessage("system", system_text(system_prompt, kept, fixed_lines)), *hist, user]
    total = runtime.count_tokens(runtime.render(messages))
    assert total <= budget, (total, budget)
    return Assembled(messages, kept, hist, total, budget)


class ChatStream:
    """A streaming chat answer: iterate for text pieces; ``result`` once it is done.

    The exchange is written back when the stream ends — also when the caller stops early,
    in which case the partial answer is kept with ``metadata.interrupted = true``.
    """

    def __init__(self) -> None:
        self._pieces: Iterator[str] = iter(())
        self.result: ChatResult | None = None

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


@dataclass
class _Turn:
    """Everything one chat call carries from assembly to write-back."""

    user_id: str
    cube_id: str
    session_id: str
    message: str
    runtime: Runtime
    assembled: Assembled
    timings: ChatTimings
    started: float
    extra: dict[str, Any] = field(default_factory=dict)


class ChatOps:
    """``chat`` and the runtimes it uses; mixed into :class:`memos.core.MemOS`."""

    settings: Settings
    _runtimes: dict[str, Runtime]

    # the facade's methods used here (declared for type checkers)
    if TYPE_CHECKING:
        search: Any
        add: Any
        readable_cubes: Any
        get_user: Any
        store: Any
        clock: Any
        write_lock: Any
        _runtime_lock: Any
        activation: ActivationMemory
        parametric: ParametricMemory
        events: EventBus

    # ------------------------------------------------------------------ runtimes
    def runtime(self, name: str | None = None, **overrides: Any) -> Runtime:
        """The loaded runtime ``name`` (default: the configured one), loaded on first use."""
        from memos import factories

        key = name or self.settings.runtime.name
        if overrides:
            key += repr(sorted(overrides.items()))
        with self._runtime_lock:  # two threads asking at once load the model once
            rt = self._runtimes.get(key)
            if rt is None:
                rt = factories.make_runtime(self.settings, name, **overrides)
                self._runtimes[key] = rt
        return rt

    def close_runtimes(self) -> None:
        for rt in self._runtimes.values():
            rt.close()
        self._runtimes.clear()

    # ------------------------------------------------------------------ chat
    @overload
    def chat(
        self,
        message: str,
        *,
        user_id: str,
        cube_ids: Sequence[str] | str | None = None,
        session_id: str | None = None,
        runtime: str | Runtime | None = None,
        stream: Literal[False] = False,
        max_tokens: int | None = None,
        memories: int | None = None,
        write_back: bool | None = None,
        explain: bool = False,
        activation: bool = True,
        parametric: bool = True,
    ) -> ChatResult: ...

    @overload
    def chat(
        self,
        message: str,
        *,
        user_id: str,
        cube_ids: Sequence[str] | str | None = None,
        session_id: str | None = None,
        runtime: str | Runtime | None = None,
        stream: Literal[True],
        max_tokens: int | None = None,
        memories: int | None = None,
        write_back: bool | None = None,
        explain: bool = False,
        activation: bool = True,
        parametric: bool = True,
    ) -> ChatStream: ...

    def chat(
        self,
        message: str,
        *,
        user_id: str,
        cube_ids: Sequence[str] | str | None = None,
        session_id: str | None = None,
        runtime: str | Runtime | None = None,
        stream: bool = False,
        max_tokens: int | None = None,
        memories: int | None = None,
        write_back: bool | None = None,
        explain: bool = False,
        activation: bool = True,
        parametric: bool = True,
    ) -> ChatResult | ChatStream:
        """Answer ``message`` with the memories of ``cube_ids`` (all readable cubes by default).

        The exchange is written to the first of ``cube_ids`` (default: the user's oldest own
        cube) under ``session_id`` (a new session when omitted; the result names it). With
        ``stream=True`` a :class:`ChatStream` is returned instead of a :class:`ChatResult`.
        ``explain=True`` puts the exact prompt text in ``ChatResult.prompt``.
        ``activation=False`` / ``parametric=False`` leave the compiled KV prefix / the
        cubes' LoRA adapters out; ``memories=0`` turns retrieval off.
        """
        started = time.perf_counter()
        cfg = self.settings.chat
        message = check_text(message, self.settings.max_text_chars, "message")
        if session_id is not None and (not isinstance(session_id, str) or not session_id.strip()):
            raise InvalidInput("session_id must be a non-empty string")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise InvalidInput("max_tokens must be a positive integer")
        if memories is not None and (
            isinstance(memories, bool) or not isinstance(memories, int) or memories < 0
        ):
            raise InvalidInput("memories must be an integer >= 0")
        ids = [cube_ids] if isinstance(cube_ids, str) else cube_ids
        readable = self.readable_cubes(user_id, ids)
        do_write = cfg.write_back if write_back is None else write_back
        cube_id = self._write_cube(user_id, ids, do_write)
        session = session_id or f"chat-{uuid.uuid4().hex[:12]}"
        rt = runtime if runtime is not None and not isinstance(runtime, str) else self.runtime(runtime)
        n_tokens = max_tokens or self.settings.runtime.max_new_tokens
        n_tokens = min(n_tokens, max(1, rt.context_length // 2))
        timings = ChatTimings()

        t0 = time.perf_counter()
        k = cfg.memories if memories is None else memories
        history = self._session_history(cube_id, session, cfg.history_turns)
        # parametric memory: the active adapters of the cubes read (the written cube first)
        adapters = []
        if parametric and cfg.parametric:
            order = (
                [cube_id, *(c for c in readable if c != cube_id)] if cube_id in readable else list(readable)
            )
            adapters = self.parametric.for_chat(order, rt, cfg.max_adapters)
        # activation memory: the cube's compiled KV prefix for this model, if one is ready
        # (computed without adapters, so not used with them)
        use_kv = activation and cfg.activation and not adapters
        kv = self.activation.for_chat(cube_id, rt) if use_kv else None
        in_prefix = set(kv[0].memory_ids) if kv else set()
        hits: builtins.list[SearchHit] = []
        if k > 0 and readable:
            # the session's recent turns and the KV prefix are in the prompt already
            skip = {h[1] for h in history} | in_prefix
            hits = self._chat_memories(message, user_id=user_id, cube_ids=readable, k=k, skip=skip)
        timings.retrieval_ms = (time.perf_counter() - t0) * 1000

        t0 = time.perf_counter()
        user_name = self.get_user(user_id).name
        system_prompt = cfg.system_prompt.replace("{user}", user_name)
        args = {"system_prompt": system_prompt, "message": message, "hits": hits,
                "history": [h[0] for h in history], "max_tokens": n_tokens}  # fmt: skip
        activation_report: dict[str, Any] | None = None
        assembled: Assembled | None = None
        prompt_ids: builtins.list[int] | None = None
        if kv is not None:
            info, prefix, text, lines = kv
            activation_report = {
                "id": info.id,
                "n_tokens": info.n_tokens,
                "memory_ids": info.memory_ids,
                "used": False,
            }
            if info.system_prompt != system_prompt:
                activation_report["reason"] = "compiled for another user's system prompt"
            else:
                try:
                    assembled = assemble(rt, fixed_lines=lines, slack=4, **args)  # type: ignore[arg-type]
                except ContextOverflow:
                    activation_report["reason"] = "the prefix and the message do not fit the context together"
                if assembled is not None:
                    rendered = rt.render(assembled.messages)
                    if rendered.startswith(text):
                        prompt_ids = [*prefix.token_ids, *rt.tokenize(rendered[len(text) :])]
                        activation_report["used"] = True
                        assembled.prompt_tokens = len(prompt_ids)
                    else:
                        activation_report["reason"] = "the prompt does not begin with the compiled text"
                        assembled = None
        if assembled is None:
            assembled = assemble(rt, **args)  # type: ignore[arg-type]
        timings.assemble_ms = (time.perf_counter() - t0) * 1000
        params = GenerationParams(
            max_tokens=n_tokens,
            temperature=self.settings.runtime.temperature,
            top_p=self.settings.runtime.top_p,
            seed=self.settings.runtime.seed,
        )
        turn = _Turn(user_id, cube_id, session, message, rt, assembled, timings, started)
        turn.extra["user_name"] = user_name
        turn.extra["activation"] = activation_report
        turn.extra["parametric"] = [{"id": i.id, "cube_id": i.cube_id, "name": i.name} for i, _ in adapters]
        if prompt_ids is not None and kv is not None:
            stops = tuple(dict.fromkeys((*params.stop, *rt.default_stops())))
            gen = rt.complete(prompt_ids, replace(params, stop=stops), prefix=kv[1])
        else:
            gen = rt.chat(assembled.messages, params, adapters=[a for _, a in adapters])
        if explain:
            turn.extra["prompt"] = rt.render(assembled.messages)
        if stream:
            chat_stream = ChatStream()
            chat_stream._pieces = self._stream(gen, turn, do_write, chat_stream)
            return chat_stream
        gen.read()
        return self._finish(gen, turn, do_write)

    def _chat_memories(
        self, message: str, *, user_id: str, cube_ids: Sequence[str], k: int, skip: Set[str] = frozenset()
    ) -> builtins.list[SearchHit]:
        """The memories ``chat`` offers the model for ``message``: the best ``k`` hits of
        ``cube_ids`` less those in ``skip``, those under ``chat.min_score``, the assistant's
        own turns (unless ``chat.recall_assistant_turns``) and the user's questions that
        tell nothing (:func:`tells_nothing`), so that facts are not crowded out."""
        cfg = self.settings.chat
        found = self.search(message, user_id=user_id, cube_ids=cube_ids, top_k=2 * k + len(skip))
        return [
            h
            for h in found
            if h.memory.id not in skip
            and h.score >= cfg.min_score
            and (cfg.recall_assistant_turns or not _assistant_turn(h))
            and not tells_nothing(h)
        ][:k]

    def _stream(self, gen: Generation, turn: _Turn, write: bool, out: ChatStream) -> Iterator[str]:
        try:
            yield from gen  # closing this stream early closes the generation too
        finally:
            out.result = self._finish(gen, turn, write)

    def _finish(self, gen: Generation, turn: _Turn, write: bool) -> ChatResult:
        st = gen.stats
        t = turn.timings
        t.ttft_ms, t.tokens_per_s, t.generate_ms = st.ttft_ms, st.tokens_per_s, st.total_ms
        answer = gen.text.strip()
        result = ChatResult(
            answer=answer,
            session_id=turn.session_id,
            cube_id=turn.cube_id,
            memories=[
                UsedMemory(id=h.memory.id, cube_id=h.memory.cube_id, text=h.memory.text, score=h.score)
                for h in turn.assembled.memories
            ],
            history_turns=len(turn.assembled.history),
            prompt_tokens=turn.assembled.prompt_tokens,
            completion_tokens=st.completion_tokens,
            context_budget=turn.assembled.budget,
            finish_reason=st.finish_reason,
            runtime=turn.runtime.fingerprint.as_dict(),
            prompt=turn.extra.get("prompt"),
            activation=turn.extra.get("activation"),
            parametric=turn.extra.get("parametric") or [],
        )
        if write:
            t0 = time.perf_counter()
            self._write_back(turn, answer, st.finish_reason == "interrupted", result)
            t.write_ms = (time.perf_counter() - t0) * 1000
        t.total_ms = (time.perf_counter() - turn.started) * 1000
        result.timings = t
        return result

    def _write_back(self, turn: _Turn, answer: str, interrupted: bool, result: ChatResult) -> None:
        now = self.clock()
        meta = {"chat": True}
        added = self.add(
            [{"role": "user", "content": turn.message, "name": turn.extra["user_name"], "timestamp": now}],
            user_id=turn.user_id,
            cube_id=turn.cube_id,
            session_id=turn.session_id,
            metadata=meta,
        )
        result.written = [m.id for m in added.memories]
        result.extracted = [m.id for m in added.derived]
        if answer:
            said = self.add(
                [{"role": "assistant", "content": answer, "timestamp": now}],
                user_id=turn.user_id,
                cube_id=turn.cube_id,
                session_id=turn.session_id,
                metadata={**meta, "interrupted": True} if interrupted else meta,
                extract=False,
            )
            result.written += [m.id for m in said.memories]
        if self.settings.extractor == "llm" and added.memories:
            report = self.read_memories(
                turn.message,
                user_id=turn.user_id,
                cube_id=turn.cube_id,
                source_id=added.memories[0].id,
                runtime=turn.runtime,
                max_tokens=self.settings.chat.reader_max_tokens,
            )
            result.reader = report.model_dump()
            result.extracted += report.written
        self.events.publish(
            Event(
                EventKind.chat_turn,
                now,
                turn.user_id,
                turn.cube_id,
                tuple(result.written),
                details={"session_id": turn.session_id, "memories": result.memory_ids},
            )
        )

    def read_memories(
        self,
        text: str,
        *,
        user_id: str,
        cube_id: str,
        source_id: str | None = None,
        runtime: Runtime | None = None,
        max_tokens: int = 400,
        timeout_s: float | None = None,
    ) -> ReaderReport:
        """Run the LLM reader on ``text`` and apply its decisions (see :mod:`memos.extract.llm`)."""
        from memos.extract.llm import Reader

        rt = runtime or self.runtime()
        reader = Reader(self, rt, max_tokens=max_tokens, timeout_s=timeout_s)  # type: ignore[arg-type]
        return reader.read(text, user_id=user_id, cube_id=cube_id, source_id=source_id)

    # ------------------------------------------------------------------ helpers
    def _write_cube(self, user_id: str, cube_ids: Sequence[str] | None, write: bool) -> str:
        """The cube the exchange goes to; checked for write access before any generation."""
        if cube_ids:
            with self.store.session() as s:
                acl.require(s, cube_ids[0], user_id, acl.WRITE if write else acl.READ)
            return cube_ids[0]
        with self.store.session() as s:
            own = s.scalars(
                select(CubeRow.id).where(CubeRow.owner_id == user_id).order_by(CubeRow.created_at).limit(1)
            ).first()
        if own is None:
            raise InvalidInput(
                f"user {user_id!r} owns no cube to remember the chat in; create one or pass cube_ids"
            )
        return str(own)

    def _session_history(
        self, cube_id: str, session_id: str, turns: int
    ) -> builtins.list[tuple[ChatMessage, str]]:
        """The last ``turns`` active turns of the session, oldest first, with their memory ids."""
        if turns <= 0:
            return []
        with self.store.session() as s:
            rows = s.execute(
                select(MessageRow.role, MessageRow.content, MessageRow.memory_id)
                .join(MemoryRow, MemoryRow.id == MessageRow.memory_id)
                .where(
                    MessageRow.cube_id == cube_id,
                    MessageRow.session_id == session_id,
                    MemoryRow.state == "active",
                )
                .order_by(MessageRow.id.desc())
                .limit(turns)
            ).all()
        out: builtins.list[tuple[ChatMessage, str]] = []
        for role, content, memory_id in reversed(rows):
            r: Literal["user", "assistant"] = "assistant" if role == "assistant" else "user"
            out.append((ChatMessage(r, content), memory_id))
        return out
