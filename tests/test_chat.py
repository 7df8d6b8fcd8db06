"""MemOS.chat: the memory-augmented forward pass on the real bundled model.

What must hold whatever the (small) model answers: a fact from an earlier session is
retrieved and placed in the prompt; the prompt never exceeds the context budget; the
exchange is written back; extraction failures lose nothing; the three runtimes answer
through the same call.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock

from memos.errors import ContextOverflow, InvalidInput, PermissionDenied
from memos.extract.llm import ReaderItem, ReaderOutput, parse

pytestmark = pytest.mark.slow


@pytest.fixture
def chat_mos(tmp_path: Path, embedder: Any) -> Iterator[Any]:
    from memos.core import MemOS

    mos = MemOS(home=tmp_path / "home", embedder=embedder, clock=Clock())
    mos.add_user("alice")
    mos.create_cube("alice", "personal")
    yield mos
    mos.close()


def _cube(mos: Any) -> str:
    return str(mos.list_cubes("alice")[0].id)


def test_fact_from_an_earlier_session_reaches_the_prompt(chat_mos: Any, hf_runtime: Any) -> None:
    first = chat_mos.chat(
        "My sister Mira lives in Tromso and works as a marine biologist.", user_id="alice", runtime=hf_runtime
    )
    assert first.answer and len(first.written) == 2
    later = chat_mos.chat("Where does my sister live?", user_id="alice", runtime=hf_runtime, explain=True)
    assert later.session_id != first.session_id
    assert first.written[0] in later.memory_ids  # the user's turn of the first session
    assert later.prompt is not None and "Mira lives in Tromso" in later.prompt
    assert later.prompt.index("Mira lives in Tromso") < later.prompt.index("Where does my sister live?")
    assert later.timings.retrieval_ms > 0 and later.timings.ttft_ms > 0 and later.timings.tokens_per_s > 0
    assert later.runtime["runtime"] == "transformers"
    # both turns are episodes of the session, the answer without extraction
    episodes = chat_mos.list_memories(user_id="alice", cube_id=_cube(chat_mos), filters={"type": "episode"})
    texts = [m.text for m in episodes.items]
    assert "Where does my sister live?" in texts and later.answer in texts
    hit = chat_mos.get(first.written[0], user_id="alice")
    assert hit.hits >= 1 and hit.last_accessed is not None


def test_session_history_is_used_and_not_repeated_as_memory(chat_mos: Any, hf_runtime: Any) -> None:
    a = chat_mos.chat(
        "I adopted a cat named Pretzel.", user_id="alice", runtime=hf_runtime, session_id="s1", max_tokens=24
    )
    b = chat_mos.chat(
        "What is its name?", user_id="alice", runtime=hf_runtime, session_id="s1", explain=True, max_tokens=24
    )
    assert b.history_turns == 2
    assert not set(a.written) & set(b.memory_ids)  # already in the history block
    assert b.prompt is not None and b.prompt.count("I adopted a cat named Pretzel.") == 1


@pytest.mark.parametrize("context", [384, 512, 1024])
def test_prompt_never_exceeds_the_budget(tmp_path: Path, embedder: Any, context: int) -> None:
    from memos.adapters.runtimes.hf import TransformersRuntime
    from memos.core import MemOS

    rt = TransformersRuntime("smollm2", context_tokens=context)
    mos = MemOS(home=tmp_path / "home", embedder=embedder, clock=Clock())
    try:
        mos.add_user("alice")
        cube = mos.create_cube("alice", "personal").id
        long_fact = "Alice's garden has " + ", ".join(
            f"a {c} rose" for c in ["red", "white", "pink", "yellow"] * 12
        )
        mos.add(text=long_fact, user_id="alice", cube_id=cube)
        for i in range(30):
            mos.add(
                [{"role": "user", "content": f"Turn {i}: the garden needs water on day {i}. " * 4},
                 {"role": "assistant", "content": f"Noted, day {i}."}],
                user_id="alice", cube_id=cube, session_id="garden",
            )  # fmt: skip
        mos.settings.chat.history_turns = 60
        res = mos.chat(
            "What grows in my garden?", user_id="alice", session_id="garden", runtime=rt,
            memories=30, max_tokens=64, explain=True, write_back=False,
        )  # fmt: skip
        assert res.context_budget == context - 64
        assert res.prompt_tokens <= res.context_budget
        assert res.prompt is not None and len(rt.tokenize(res.prompt)) == res.prompt_tokens
        assert res.history_turns > 0 or res.memories  # something optional made it in
        assert res.completion_tokens <= 64
        # the message alone too big for the budget: a typed error, nothing written
        before = mos.list_memories(user_id="alice", cube_id=cube, limit=1).total
        with pytest.raises(ContextOverflow):
            mos.chat("garden " * context, user_id="alice", runtime=rt, max_tokens=64)
        assert mos.list_memories(user_id="alice", cube_id=cube, limit=1).total == before
    finally:
        mos.close()
        rt.close()


def test_streaming_chat_and_interrupt(chat_mos: Any, hf_runtime: Any) -> None:
    stream = chat_mos.chat("Tell me a long story about the sea.", user_id="alice", runtime=hf_runtime,
                           stream=True, max_tokens=40)  # fmt: skip
    pieces = list(stream)
    assert stream.result is not None
    assert "".join(pieces).strip() == stream.result.answer
    # stopping early still keeps both turns; the partial answer is marked
    stream = chat_mos.chat(
        "Tell me another story.", user_id="alice", runtime=hf_runtime, stream=True, max_tokens=40
    )
    it = iter(stream)
    first = next(it)
    while not first.strip():
        first += next(it)
    stream.close()
    res = stream.result
    assert res is not None and res.finish_reason == "interrupted"
    said = chat_mos.get(res.written[1], user_id="alice")
    assert said.metadata.get("interrupted") is True and said.text == res.answer


def test_bad_input_and_acl(chat_mos: Any, hf_runtime: Any) -> None:
    cube = _cube(chat_mos)
    chat_mos.add_user("bob")
    with pytest.raises(PermissionDenied):
        chat_mos.chat("hi", user_id="bob", cube_ids=[cube], runtime=hf_runtime)
    chat_mos.share_cube(cube, "alice", "bob", "reader")
    with pytest.raises(PermissionDenied):  # readers may chat with it, not write to it
        chat_mos.chat("hi", user_id="bob", cube_ids=[cube], runtime=hf_runtime)
    res = chat_mos.chat(
        "hi", user_id="bob", cube_ids=[cube], runtime=hf_runtime, write_back=False, max_tokens=4
    )
    assert res.written == []
    for bad in ({"message": ""}, {"message": "x", "max_tokens": 0}, {"message": "x", "session_id": " "}):
        with pytest.raises(InvalidInput):
            chat_mos.chat(user_id="alice", runtime=hf_runtime, **bad)
    with pytest.raises(InvalidInput, match="owns no cube"):
        chat_mos.chat("hi", user_id="bob", runtime=hf_runtime)


def test_forgotten_memory_is_not_used(chat_mos: Any, hf_runtime: Any) -> None:
    cube = _cube(chat_mos)
    m = chat_mos.add(text="Alice's locker code is 4711", user_id="alice", cube_id=cube).memories[0]
    res = chat_mos.chat("What is my locker code?", user_id="alice", runtime=hf_runtime, max_tokens=8)
    assert m.id in res.memory_ids
    chat_mos.delete(m.id, user_id="alice")
    res = chat_mos.chat(
        "What is my locker code?", user_id="alice", runtime=hf_runtime, max_tokens=8, explain=True
    )
    assert (
        m.id not in res.memory_ids
        and res.prompt is not None
        and "4711" not in res.prompt.split("Memories:")[-1].split("<|im_end|>")[0]
    )


# --------------------------------------------------------------------------- the LLM reader


def test_reader_failure_loses_nothing(chat_mos: Any, hf_runtime: Any) -> None:
    chat_mos.settings.extractor = "llm"
    chat_mos.settings.chat.reader_max_tokens = 3  # the JSON answer cannot fit: a failure
    res = chat_mos.chat(
        "My brother Tom moved to Lisbon last year.", user_id="alice", runtime=hf_runtime, max_tokens=8
    )
    assert res.reader is not None and res.reader["ok"] is False and res.reader["attempts"] == 2
    assert len(res.written) == 2  # both turns kept
    stored = chat_mos.get(res.written[0], user_id="alice")
    assert stored.text == "My brother Tom moved to Lisbon last year."
    assert chat_mos.stats()["reader_failures"] == 1
    events = chat_mos.history(res.written[0], user_id="alice").events
    assert any(e.action == "extract_failed" for e in events)
    # a timeout is a failure too
    report = chat_mos.read_memories("I like tea.", user_id="alice", cube_id=_cube(chat_mos), runtime=hf_runtime,
                                    timeout_s=0.0)  # fmt: skip
    assert not report.ok and "Timeout" in (report.error or "")
    assert chat_mos.stats()["reader_failures"] == 2


def test_reader_with_grammar_gives_valid_decisions(chat_mos: Any, llama_runtime: Any) -> None:
    report = chat_mos.read_memories(
        "My favourite colour is green and I work as a nurse in Oslo.",
        user_id="alice", cube_id=_cube(chat_mos), runtime=llama_runtime,
    )  # fmt: skip
    assert report.ok and report.attempts == 1  # constrained decoding: valid JSON first time
    for mid in report.written:
        assert chat_mos.get(mid, user_id="alice").metadata["extractor"].startswith("llm:")


def test_reader_decisions_are_applied(chat_mos: Any, llama_runtime: Any) -> None:
    from memos.extract.llm import Reader

    cube = _cube(chat_mos)
    city = chat_mos.add(
        text="The user lives in Bergen", type="fact", user_id="alice", cube_id=cube, extract=False
    )
    job = chat_mos.add(
        text="The user works as a nurse", type="fact", user_id="alice", cube_id=cube, extract=False
    )
    tea = chat_mos.add(
        text="The user likes tea", type="preference", user_id="alice", cube_id=cube, extract=False
    )
    known = [chat_mos.search(t, user_id="alice", cube_ids=[cube], top_k=1)[0] for t in
             ("lives in Bergen", "works as a nurse", "likes tea")]  # fmt: skip
    out = ReaderOutput(memories=[
        ReaderItem(action="SUPERSEDE", text="The user lives in Oslo", type="fact", target=1),
        ReaderItem(action="UPDATE", text="The user works as a head nurse", type="fact", target=2),
        ReaderItem(action="NOOP", text="The user likes tea", type="preference", target=3),
        ReaderItem(action="ADD", text="The user has a dog named Rex", type="fact"),
        ReaderItem(action="UPDATE", text="bad target", type="fact", target=9),
    ])  # fmt: skip
    reader = Reader(
        llama_runtime.chat,
        model_id=llama_runtime.fingerprint.model_id,
        search=chat_mos.search,
        add=chat_mos.add,
        update=chat_mos.update,
        supersede=chat_mos.supersede,
    )
    report = reader.apply(out, known, user_id="alice", cube_id=cube, source_id=None, attempts=1)
    assert report.invalid == 1 and [a["action"] for a in report.actions] == [
        "SUPERSEDE",
        "UPDATE",
        "NOOP",
        "ADD",
    ]
    old = chat_mos.get(city.memories[0].id, user_id="alice")
    assert (
        old.state == "superseded"
        and old.valid_to is not None
        and old.superseded_by == report.actions[0]["id"]
    )
    retired = [e for e in chat_mos.history(old.id, user_id="alice").events if e.action == "supersede"]
    assert [(e.actor, e.reason, e.details) for e in retired] == [
        ("alice", "llm reader", {"by": report.actions[0]["id"]})
    ]
    assert chat_mos.get(job.memories[0].id, user_id="alice").version == 2
    assert chat_mos.get(tea.memories[0].id, user_id="alice").version == 1
    hits = chat_mos.search("where does the user live", user_id="alice", cube_ids=[cube], top_k=5)
    assert city.memories[0].id not in [h.memory.id for h in hits]
    assert (
        chat_mos.history(city.memories[0].id, user_id="alice").versions[0].text == "The user lives in Bergen"
    )


def test_reader_output_parsing() -> None:
    assert parse('```json\n{"memories": []}\n```').memories == []
    assert (
        parse('Sure! {"memories": [{"action": "ADD", "text": "The user likes jazz", "type": "preference"}]}')
        .memories[0]
        .type
        == "preference"
    )
    for bad in (
        "no json",
        '{"memories": [{"action": "MAYBE", "text": "xyz", "type": "fact"}]}',
        '{"memories": 3}',
    ):
        with pytest.raises(ValueError):
            parse(bad)


# --------------------------------------------------------------------------- one call, three runtimes


def test_three_runtimes_through_the_same_call(
    chat_mos: Any, hf_runtime: Any, llama_runtime: Any, openai_runtime: Any
) -> None:
    chat_mos.add(text="Alice's favourite city is Kyoto", user_id="alice", cube_id=_cube(chat_mos))
    for rt in (hf_runtime, llama_runtime, openai_runtime):
        res = chat_mos.chat("Which city do I like most?", user_id="alice", runtime=rt, max_tokens=24)
        assert res.answer, rt.name
        assert res.runtime["runtime"] == rt.name
        assert any("Kyoto" in m.text for m in res.memories)
        assert res.prompt_tokens <= res.context_budget


def test_async_chat(tmp_path: Path, embedder: Any, llama_runtime: Any) -> None:
    import asyncio

    from memos.aio import AsyncMemOS

    async def go() -> tuple[str, str]:
        async with AsyncMemOS(home=tmp_path / "home", embedder=embedder) as amos:
            await amos.add_user("alice")
            await amos.create_cube("alice", "personal")
            res = await amos.chat(
                "Say hello.", user_id="alice", runtime=llama_runtime, max_tokens=8, write_back=False
            )
            pieces = [p async for p in amos.chat_stream("Say hello.", user_id="alice", runtime=llama_runtime,
                                                        max_tokens=8, write_back=False)]  # fmt: skip
            with pytest.raises(InvalidInput):
                await amos.chat("x", user_id="alice", stream=True)
            return res.answer, "".join(pieces).strip()

    answer, streamed = asyncio.run(go())
    assert answer and answer == streamed  # greedy: the same answer both ways
