"""Ranking on a small hand-made set: the obvious answer ranks first (issue 19, item 8).

Ten facts about two people, stated by the user, and two chat sessions in which a third
person moves and changes job (tests/data/ranking.json). Each query has one obvious
answer, first on meaning or on words; it must be the first hit — also where five facts
share only the name the query asks about, and where a current fact competes with the
turns of a conversation, an outdated one among them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock

DATA = Path(__file__).parent / "data" / "ranking.json"


def _home(mos: Any) -> tuple[str, dict[str, str], dict[str, Any]]:
    data = json.loads(DATA.read_text(encoding="utf-8"))
    mos.add_user("u")
    cube = mos.create_cube("u", "people").id
    ids = {
        key: mos.add(text=text, user_id="u", cube_id=cube).memories[0].id
        for key, text in data["facts"].items()
    }
    for session in data["sessions"]:
        messages = [{**m, "timestamp": session["date"]} for m in session["messages"]]
        mos.add(messages=messages, user_id="u", cube_id=cube, session_id=session["id"])
    return cube, ids, data


def test_every_obvious_query_ranks_its_answer_first(mos: Any) -> None:
    cube, ids, data = _home(mos)
    assert len(data["queries"]) >= 14
    wrong = []
    for q in data["queries"]:
        hits = mos.search(q["query"], user_id="u", cube_ids=[cube], top_k=5)
        first = hits[0].memory
        expected = (
            (first.id == ids[q["first"]]) if "first" in q else first.text.startswith(tuple(q["first_text"]))
        )
        if not expected:
            wrong.append((q["query"], first.text, hits[0].scores))
    assert not wrong, "\n".join(f"{q!r} -> {text!r} {scores}" for q, text, scores in wrong)


def test_a_current_fact_ranks_above_the_outdated_turn(mos: Any) -> None:
    cube, _, _ = _home(mos)
    hits = mos.search("Where does Alice live?", user_id="u", cube_ids=[cube], top_k=10)
    texts = [h.memory.text for h in hits]
    berlin = next(i for i, t in enumerate(texts) if t.startswith("Alice lives in Berlin"))
    lisbon = next(i for i, t in enumerate(texts) if "I live in Lisbon" in t)
    assert berlin == 0 < lisbon
    assert "Alice lives in Lisbon" not in texts  # superseded: never returned
    # the fact is its own passage: it gains the share of its score a turn gains at least
    fact = hits[berlin]
    assert fact.scores["context"] > 0


# ---------------------------------------------------------------------------- chat's memories (item 9)


def _asked_before(mos: Any) -> str:
    """Chats of earlier sessions as ``chat`` writes them back: the user's turns (extracted)
    and the answers (not extracted)."""
    mos.add_user("alice", "Alice")
    cube = mos.create_cube("alice", "personal").id

    def chat(session: str, *exchange: str) -> None:
        for i, text in enumerate(exchange):
            user = i % 2 == 0
            turn = (
                {"role": "user", "name": "Alice", "content": text}
                if user
                else {"role": "assistant", "content": text}
            )
            mos.add(
                [turn],
                user_id="alice",
                cube_id=cube,
                session_id=session,
                metadata={"chat": True},
                extract=user,
            )

    chat("c1", "My sister Mira lives in Tromsø and works as a marine biologist.", "What a place to live!")
    chat(
        "c2",
        "Where does my sister live?",
        "In Tromsø.",
        "And what does she do?",
        "She is a marine biologist.",
    )
    chat("c3", "Should I take my dog Rex to the vet?", "If he seems unwell, yes.")
    chat("c4", "Where does my sister live?", "Mira lives in Tromsø.")
    return cube


def test_chat_offers_facts_not_the_questions_the_user_asked_before(mos: Any) -> None:
    from memos.chat import chat_memories, tells_nothing

    cube = _asked_before(mos)
    for message in ("Where does my sister live?", "What does my sister do for a living?"):
        hits = mos.search(message, user_id="alice", cube_ids=[cube], top_k=4)
        assert tells_nothing(hits[0])  # what search ranks first: an earlier question, worded alike
        offered = chat_memories(mos.search, mos.settings.chat, message, user_id="alice", cube_ids=[cube], k=4)
        texts = [h.memory.text for h in offered]
        assert texts[0] == "My sister Mira lives in Tromsø and works as a marine biologist.", texts
        assert not {"Where does my sister live?", "And what does she do?"} & set(texts)
    # a question that names something carries a fact: it is still offered
    offered = chat_memories(
        mos.search, mos.settings.chat, "What is my dog called?", user_id="alice", cube_ids=[cube], k=4
    )
    assert offered[0].memory.text == "Should I take my dog Rex to the vet?"


@pytest.mark.slow
def test_a_new_chat_session_gets_the_fact_first(tmp_path: Path, embedder: Any, hf_runtime: Any) -> None:
    from memos.core import MemOS

    mos = MemOS(home=tmp_path / "home", embedder=embedder, clock=Clock())
    try:
        cube = _asked_before(mos)
        res = mos.chat("Where does my sister live?", user_id="alice", runtime=hf_runtime, max_tokens=8,
                       write_back=False)  # fmt: skip
        texts = [m.text for m in res.memories]
        assert texts[0] == "My sister Mira lives in Tromsø and works as a marine biologist."
        assert "Where does my sister live?" not in texts and "And what does she do?" not in texts
        assert res.cube_id == cube
    finally:
        mos.close()
