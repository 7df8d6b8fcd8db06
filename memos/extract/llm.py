"""The LLM memory reader: facts and preferences out of a user's turn, decided against
what the cube already knows.

The model sees the turn and the most similar existing facts (numbered), and answers with
JSON that follows :data:`SCHEMA` — constrained by a grammar where the runtime can
(llama.cpp, servers with ``response_format``), validated and retried once where it
cannot (transformers). Each item is one decision:

- ``ADD`` — a new fact or preference;
- ``UPDATE`` — refines existing memory ``target``: a new version of it;
- ``SUPERSEDE`` — contradicts memory ``target``: a new fact is added, the old one becomes
  ``superseded`` with ``valid_to`` set and keeps its history;
- ``NOOP`` — already known.

The turn itself was stored as an episode before the reader runs, so a failure — bad JSON,
a timeout, a model error — loses nothing: the report says so, and the service that ran the
reader counts it (``stats()["reader_failures"]``) and audits it on the episode.

The reader stands below the services: it generates with a callable and writes through the
ones it is given (``MemOS.search``, ``add``, ``update``, ``supersede``), never a row itself.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from memos.errors import InvalidState, MemosError, NotFound
from memos.runtime import ChatMessage, Generation, GenerationParams
from memos.types import AddResult, MemoryItem, SearchHit

#: at most this many statements per turn, each at most this long: bounds the answer, so a
#: small model that repeats itself under the grammar still closes its JSON in budget
MAX_ITEMS = 5
MAX_TEXT = 200

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "memories": {
            "type": "array",
            "maxItems": MAX_ITEMS,
            "items": {
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": ["ADD", "UPDATE", "SUPERSEDE", "NOOP"]},
                    "text": {"type": "string", "maxLength": MAX_TEXT},
                    "type": {"type": "string", "enum": ["fact", "preference"]},
                    "target": {"type": "integer", "minimum": 1},
                },
                "required": ["action", "text", "type"],
            },
        }
    },
    "required": ["memories"],
}

INSTRUCTIONS = (
    "You extract lasting facts and preferences about the user from their message, as short "
    'third-person statements ("The user\'s sister Mira lives in Tromso"). Known memories are '
    "numbered. For each statement choose an action: ADD if it is new; UPDATE with target N if "
    "it refines memory N; SUPERSEDE with target N if it contradicts memory N; NOOP with target N "
    "if memory N already says it. Small talk and questions hold no facts: answer "
    '{"memories": []}. Answer with JSON only: {"memories": [{"action": ..., "text": ..., '
    '"type": "fact" or "preference", "target": N}]}'
)


class ReaderItem(BaseModel):
    action: Literal["ADD", "UPDATE", "SUPERSEDE", "NOOP"]
    text: str = Field(min_length=3, max_length=MAX_TEXT)
    type: Literal["fact", "preference"] = "fact"
    target: int | None = None


class ReaderOutput(BaseModel):
    memories: list[ReaderItem] = Field(max_length=MAX_ITEMS)


class ReaderReport(BaseModel):
    ok: bool
    attempts: int
    error: str | None = None
    actions: list[dict[str, Any]] = Field(default_factory=list)
    written: list[str] = Field(default_factory=list, description="ids of memories added or updated")
    superseded: list[str] = Field(default_factory=list)
    invalid: int = Field(0, description="items dropped for a missing or out-of-range target")


def parse(raw: str) -> ReaderOutput:
    """The model's answer as a :class:`ReaderOutput`; ``ValueError`` when it is not one."""
    text = raw.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError(f"no JSON object in the model's answer: {raw[:120]!r}")
    try:
        return ReaderOutput.model_validate(json.loads(text[start : end + 1]))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"the model's answer does not follow the schema: {exc}") from exc


class Reader:
    """One reading with ``generate`` (a runtime's ``chat``; ``model_id`` names it in the
    memories' metadata): it finds what the cube knows with ``search`` and writes its
    decisions with ``add``, ``update`` and ``supersede`` (``MemOS.search``, ``add``,
    ``update``, ``supersede``). A generation that runs past ``timeout_s`` is a failure."""

    def __init__(
        self,
        generate: Callable[[list[ChatMessage], GenerationParams], Generation],
        *,
        model_id: str,
        search: Callable[..., list[SearchHit]],
        add: Callable[..., AddResult],
        update: Callable[..., MemoryItem],
        supersede: Callable[..., MemoryItem],
        max_tokens: int = 400,
        retries: int = 1,
        timeout_s: float | None = None,
        candidates: int = 5,
    ) -> None:
        self.generate = generate
        #: what the memories it writes and its failures name as their extractor
        self.extractor = f"llm:{model_id}"
        self.search = search
        self.add = add
        self.update = update
        self.supersede = supersede
        self.max_tokens = max_tokens
        self.retries = retries
        self.timeout_s = timeout_s
        self.candidates = candidates

    def read(self, text: str, *, user_id: str, cube_id: str, source_id: str | None = None) -> ReaderReport:
        known = self.search(
            text,
            user_id=user_id,
            cube_ids=[cube_id],
            top_k=self.candidates,
            filters={"type": ["fact", "preference"]},
        )
        listing = "\n".join(f"{i}. {h.memory.text}" for i, h in enumerate(known, start=1)) or "(none)"
        messages = [
            ChatMessage("system", INSTRUCTIONS),
            ChatMessage("user", f"Known memories:\n{listing}\n\nMessage: {text}"),
        ]
        params = GenerationParams(max_tokens=self.max_tokens, json_schema=SCHEMA)
        error: str | None = None
        output: ReaderOutput | None = None
        attempts = 0
        while output is None and attempts <= self.retries:
            attempts += 1
            try:
                output = parse(self._generate(messages, params))
            except (ValueError, TimeoutError, MemosError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        if output is None:
            return ReaderReport(ok=False, attempts=attempts, error=error)
        return self.apply(
            output, known, user_id=user_id, cube_id=cube_id, source_id=source_id, attempts=attempts
        )

    def _generate(self, messages: list[ChatMessage], params: GenerationParams) -> str:
        gen = self.generate(messages, params)
        deadline = time.monotonic() + (self.timeout_s if self.timeout_s is not None else math.inf)
        it = iter(gen)
        for _ in it:
            if time.monotonic() > deadline:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
                raise TimeoutError(f"the reader took longer than {self.timeout_s:.0f} s")
        return gen.text

    def apply(
        self,
        output: ReaderOutput,
        known: list[SearchHit],
        *,
        user_id: str,
        cube_id: str,
        source_id: str | None,
        attempts: int,
    ) -> ReaderReport:
        """Write the model's decisions; ``target`` N is ``known[N - 1]``."""
        report = ReaderReport(ok=True, attempts=attempts)
        meta = {"extractor": self.extractor}
        if source_id:
            meta["source"] = source_id
        for item in output.memories:
            target = None
            if item.action != "ADD":
                if item.target is None or not 1 <= item.target <= len(known):
                    report.invalid += 1
                    continue
                target = known[item.target - 1].memory
            entry: dict[str, Any] = {"action": item.action, "text": item.text, "type": item.type}
            if item.action == "NOOP":
                assert target is not None
                entry["target"] = target.id
            elif item.action == "UPDATE":
                assert target is not None
                if target.text.strip() == item.text.strip():
                    entry["action"] = "NOOP"
                else:
                    self.update(target.id, user_id=user_id, text=item.text, reason="llm reader: refined")
                    report.written.append(target.id)
                entry["target"] = target.id
            else:
                added = self.add(
                    text=item.text,
                    type=item.type,
                    user_id=user_id,
                    cube_id=cube_id,
                    metadata=meta,
                    extract=False,
                )
                new_id = added.memories[0].id
                report.written.append(new_id)
                entry["id"] = new_id
                if item.action == "SUPERSEDE":
                    assert target is not None
                    try:
                        self.supersede(target.id, by=new_id, user_id=user_id, reason="llm reader")
                        report.superseded.append(target.id)
                    except (InvalidState, NotFound):
                        pass  # changed or gone since it was found: nothing left to retire
                    entry["target"] = target.id
            report.actions.append(entry)
        return report
