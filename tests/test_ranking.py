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
