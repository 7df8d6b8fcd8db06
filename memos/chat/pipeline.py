"""The Chat service: ``MemOS.chat`` and ``read_memories`` (the steps are in
:mod:`memos.chat`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, overload

from sqlalchemy import select

from memos import acl
from memos.activation import ActivationInfo, ActivationMemory
from memos.chat.prompt import Assembled, assemble, chat_memories
from memos.chat.results import ChatResult, ChatStream, ChatTimings, UsedMemory
from memos.chat.runtimes import Runtimes
from memos.errors import ContextOverflow, InvalidInput
from memos.events import Event, EventKind
from memos.extract.llm import Reader, ReaderReport
from memos.home import Home
from memos.memories.adding import Adding
from memos.memories.lifecycle import Lifecycle
from memos.memories.reading import Reading
from memos.parametric import ParametricMemory
from memos.plaintext.validation import check_text
from memos.protocols import Runtime
from memos.runtime import ChatMessage, Generation, GenerationParams
from memos.storage.relational.models import CubeRow, MemoryRow, MessageRow, MetaRow
from memos.types import SearchHit


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


class Chat:
    """``MemOS.chat`` and ``read_memories``: reads through ``reading``, writes the exchange
    back through ``adding`` (and the LLM reader's decisions through ``lifecycle`` too),
    offers ``activation`` and ``parametric`` memory, and generates on ``runtimes``."""

    def __init__(
        self,
        home: Home,
        *,
        reading: Reading,
        adding: Adding,
        lifecycle: Lifecycle,
        activation: ActivationMemory,
        parametric: ParametricMemory,
        runtimes: Runtimes,
    ) -> None:
        self.home = home
        self.reading = reading
        self.adding = adding
        self.lifecycle = lifecycle
        self.activation = activation
        self.parametric = parametric
        self.runtimes = runtimes

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
        cubes' LoRA adapters out; ``memories=0`` turns retrieval off. A prefix serves only a
        chat that applies exactly the adapters it was computed under (otherwise
        ``ChatResult.activation["reason"]`` says why it was not used). Of the ``memories``
        best hits, those the KV prefix holds are in the prompt already (computed, not written
        again: ``ChatResult.activation["retrieved_in_prefix"]``); the others follow as text.
        """
        started = time.perf_counter()
        settings = self.home.settings
        cfg = settings.chat
        message = check_text(message, settings.max_text_chars, "message")
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
        readable = self.reading.readable_cubes(user_id, ids)
        do_write = cfg.write_back if write_back is None else write_back
        cube_id = self._write_cube(user_id, ids, do_write)
        session = session_id or f"chat-{uuid.uuid4().hex[:12]}"
        rt = runtime if runtime is not None and not isinstance(runtime, str) else self.runtimes.get(runtime)
        n_tokens = max_tokens or settings.runtime.max_new_tokens
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
        # that was computed under exactly the adapters this chat applies
        adapter_ids = [i.id for i, _ in adapters]
        kv, refused = (
            self.activation.choose(cube_id, rt, adapter_ids)
            if activation and cfg.activation
            else (None, None)
        )
        in_prefix = set(kv[0].memory_ids) if kv else set()
        found: list[SearchHit] = []
        if k > 0 and readable:
            # the session's recent turns are in the prompt already: others take their places
            skip = {h[1] for h in history}
            found = chat_memories(
                self.reading.search, cfg, message, user_id=user_id, cube_ids=readable, k=k, skip=skip
            )
        # the best k memories; those compiled in the KV prefix are there, already computed
        hits = [h for h in found if h.memory.id not in in_prefix]
        timings.retrieval_ms = (time.perf_counter() - t0) * 1000

        t0 = time.perf_counter()
        with self.home.store.session() as s:
            user_name = acl.user(s, user_id).name
        system_prompt = cfg.system_prompt.replace("{user}", user_name)
        args = {"system_prompt": system_prompt, "message": message, "hits": hits,
                "history": [h[0] for h in history], "max_tokens": n_tokens}  # fmt: skip
        activation_report: dict[str, Any] | None = None
        assembled: Assembled | None = None
        prompt_ids: list[int] | None = None
        if refused is not None:  # a ready prefix, computed under other adapters: not used
            activation_report = {**_prefix_report(refused[0], []), "reason": refused[1]}
        if kv is not None:
            info, prefix, text, lines = kv
            # of the k memories retrieved, those the prefix holds (not written again)
            activation_report = _prefix_report(info, [h.memory.id for h in found if h.memory.id in in_prefix])
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
        if assembled is None:  # no prefix, or not usable: every retrieved memory as text
            assembled = assemble(rt, **{**args, "hits": found})  # type: ignore[arg-type]
        timings.assemble_ms = (time.perf_counter() - t0) * 1000
        params = GenerationParams(
            max_tokens=n_tokens,
            temperature=settings.runtime.temperature,
            top_p=settings.runtime.top_p,
            seed=settings.runtime.seed,
        )
        turn = _Turn(user_id, cube_id, session, message, rt, assembled, timings, started)
        turn.extra["user_name"] = user_name
        turn.extra["activation"] = activation_report
        turn.extra["parametric"] = [{"id": i.id, "cube_id": i.cube_id, "name": i.name} for i, _ in adapters]
        if prompt_ids is not None and kv is not None:
            stops = tuple(dict.fromkeys((*params.stop, *rt.default_stops())))
            # the adapters in the order the prefix was computed under (the same sums)
            loaded = {i.id: a for i, a in adapters}
            under = [loaded[aid] for aid in kv[0].adapters]
            gen = rt.complete(prompt_ids, replace(params, stop=stops), prefix=kv[1], adapters=under)
        else:
            gen = rt.chat(assembled.messages, params, adapters=[a for _, a in adapters])
        if explain:
            turn.extra["prompt"] = rt.render(assembled.messages)
        if stream:
            return ChatStream(lambda out: self._stream(gen, turn, do_write, out))
        gen.read()
        return self._finish(gen, turn, do_write)

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
        settings = self.home.settings
        now = self.home.clock()
        meta = {"chat": True}
        added = self.adding.add(
            [{"role": "user", "content": turn.message, "name": turn.extra["user_name"], "timestamp": now}],
            user_id=turn.user_id,
            cube_id=turn.cube_id,
            session_id=turn.session_id,
            metadata=meta,
        )
        result.written = [m.id for m in added.memories]
        result.extracted = [m.id for m in added.derived]
        if answer:
            said = self.adding.add(
                [{"role": "assistant", "content": answer, "timestamp": now}],
                user_id=turn.user_id,
                cube_id=turn.cube_id,
                session_id=turn.session_id,
                metadata={**meta, "interrupted": True} if interrupted else meta,
                extract=False,
            )
            result.written += [m.id for m in said.memories]
        if settings.extractor == "llm" and added.memories:
            report = self.read_memories(
                turn.message,
                user_id=turn.user_id,
                cube_id=turn.cube_id,
                source_id=added.memories[0].id,
                runtime=turn.runtime,
                max_tokens=settings.chat.reader_max_tokens,
            )
            result.reader = report.model_dump()
            result.extracted += report.written
        self.home.events.publish(
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
        """Run the LLM reader on ``text`` and apply its decisions (see :mod:`memos.extract.llm`);
        a failure is counted (``stats()["reader_failures"]``) and audited on ``source_id``."""
        runtime = runtime or self.runtimes.get()
        reader = Reader(
            runtime.chat,
            model_id=runtime.fingerprint.model_id,
            search=self.reading.search,
            add=self.adding.add,
            update=self.lifecycle.update,
            supersede=self.lifecycle.supersede,
            max_tokens=max_tokens,
            timeout_s=timeout_s if timeout_s is not None else self.home.settings.runtime.timeout_s,
        )
        report = reader.read(text, user_id=user_id, cube_id=cube_id, source_id=source_id)
        if not report.ok:
            self._reader_failed(user_id, source_id, reader.extractor, report.error or "unknown")
        return report

    # ------------------------------------------------------------------ helpers
    def _reader_failed(self, user_id: str, source_id: str | None, extractor: str, error: str) -> None:
        home = self.home
        now = home.clock()
        with home.recording() as rec, home.write_lock, home.store.session() as s:
            counter = s.get(MetaRow, "reader_failures")
            count = int(counter.value.get("count", 0)) + 1 if counter else 1
            s.merge(MetaRow(key="reader_failures", value={"count": count, "last_error": error[:500]}))
            row = s.get(MemoryRow, source_id) if source_id else None
            if row is not None:
                rec.record(
                    s,
                    Event(
                        EventKind.extraction_failed, now, user_id, row.cube_id, (row.id,),
                        details={"extractor": extractor, "error": error[:500]},
                    ),
                )  # fmt: skip

    def _write_cube(self, user_id: str, cube_ids: Sequence[str] | None, write: bool) -> str:
        """The cube the exchange goes to; checked for write access before any generation."""
        if cube_ids:
            with self.home.store.session() as s:
                acl.require(s, cube_ids[0], user_id, acl.WRITE if write else acl.READ)
            return cube_ids[0]
        with self.home.store.session() as s:
            own = s.scalars(
                select(CubeRow.id).where(CubeRow.owner_id == user_id).order_by(CubeRow.created_at).limit(1)
            ).first()
        if own is None:
            raise InvalidInput(
                f"user {user_id!r} owns no cube to remember the chat in; create one or pass cube_ids"
            )
        return str(own)

    def _session_history(self, cube_id: str, session_id: str, turns: int) -> list[tuple[ChatMessage, str]]:
        """The last ``turns`` active turns of the session, oldest first, with their memory ids."""
        if turns <= 0:
            return []
        with self.home.store.session() as s:
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
        out: list[tuple[ChatMessage, str]] = []
        for role, content, memory_id in reversed(rows):
            r: Literal["user", "assistant"] = "assistant" if role == "assistant" else "user"
            out.append((ChatMessage(r, content), memory_id))
        return out


def _prefix_report(info: ActivationInfo, retrieved: list[str]) -> dict[str, Any]:
    """``ChatResult.activation``: the prefix a chat found, not (yet) marked used."""
    return {"id": info.id, "n_tokens": info.n_tokens, "memory_ids": info.memory_ids,
            "adapters": info.adapters, "used": False, "retrieved_in_prefix": retrieved}  # fmt: skip
