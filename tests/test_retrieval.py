"""Ranking: score fusion, the query-aware boosts, session context, and their explanations.

The pure pieces (:mod:`memos.plaintext.retrieval.fusion`) are checked on hand-computed numbers; the rest on
real homes (SQLite and PostgreSQL, Qdrant Edge, the bundled embedder).
"""

from __future__ import annotations

from typing import Any

import pytest

from memos.plaintext.retrieval import lexical
from memos.plaintext.retrieval.fusion import SpeakerMatcher, context_lift, fuse, fuse_rrf, minmax, rescale

# ---------------------------------------------------------------------------- fusion


def test_minmax_maps_best_to_one_and_worst_to_zero() -> None:
    assert minmax([("a", 0.9), ("b", 0.5), ("c", 0.7)]) == pytest.approx({"a": 1.0, "b": 0.0, "c": 0.5})
    assert minmax([("a", 3.0), ("b", 3.0)]) == {"a": 1.0, "b": 1.0}  # ties: all equally good
    assert minmax([]) == {}


def test_fuse_weights_normalised_paths_and_keeps_absolute_ones_absolute() -> None:
    ranked = {
        "dense": [("a", 0.8), ("b", 0.6), ("c", 0.4)],
        "lexical": [("b", 12.0), ("c", 2.0)],
        "graph": [("c", 0.3), ("d", 2.5)],
    }
    out = fuse(ranked, {"dense": 0.4, "lexical": 0.6, "graph": 0.5}, absolute=("graph",))
    # dense a=1, b=.5, c=0; lexical b=1, c=0; graph c=.3, d=1 (clipped, not re-normalised)
    assert out == pytest.approx({"a": 0.4, "b": 0.4 * 0.5 + 0.6, "c": 0.5 * 0.3, "d": 0.5})
    # a path with weight 0 contributes nothing, not even its ids
    assert set(fuse(ranked, {"dense": 1.0})) == {"a", "b", "c"}


def test_rescale_keeps_tiny_differences_tiny() -> None:
    # five memories that share only a name: BM25 differs by their lengths alone
    lexical_hits = [("a", 2.30), ("b", 2.21), ("c", 2.14)]
    assert minmax(lexical_hits)["c"] == 0.0  # min-max: the whole range
    # a lexical path that listed every match: no match scores 0, the floor
    assert rescale(lexical_hits, floor=0.0) == pytest.approx({"a": 1.0, "b": 2.21 / 2.30, "c": 2.14 / 2.30})
    # a dense path over a small cube: cosines more than the window below the best are 0
    dense_hits = [("a", 0.66), ("b", 0.61), ("x", 0.10)]
    assert rescale(dense_hits, window=0.3) == pytest.approx({"a": 1.0, "b": 0.25 / 0.3, "x": 0.0})
    assert rescale([("a", 0.5), ("b", 0.5)], floor=0.5) == {"a": 1.0, "b": 1.0}


def test_fuse_uses_a_floor_only_for_a_list_that_was_not_cut() -> None:
    ranked = {"lexical": [("a", 4.0), ("b", 2.0)]}
    whole = fuse(ranked, {"lexical": 1.0}, depth=3, floors={"lexical": 0.0})
    assert whole == pytest.approx({"a": 1.0, "b": 0.5})
    # at the depth, what the list left out may score up to its last: min-max as before
    cut = fuse(ranked, {"lexical": 1.0}, depth=2, floors={"lexical": 0.0})
    assert cut == pytest.approx({"a": 1.0, "b": 0.0})
    windowed = fuse({"dense": [("a", 0.9), ("b", 0.8), ("c", 0.2)]}, {"dense": 1.0}, windows={"dense": 0.2})
    assert windowed == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})


def test_fuse_rrf_is_weighted_reciprocal_rank() -> None:
    ranked = {"dense": [("a", 0.9), ("b", 0.8)], "lexical": [("b", 5.0)], "graph": [("a", 0.5)]}
    out = fuse_rrf(ranked, {"dense": 1.0, "lexical": 2.0, "graph": 1.0}, k=10, strength={"graph": True})
    assert out == pytest.approx({"a": 1 / 11 + 0.5 / 11, "b": 1 / 12 + 2 / 11})


def test_speaker_matcher_reads_names_as_index_terms() -> None:
    m = SpeakerMatcher("What did Caroline's sister research?")
    assert m.named("Caroline")
    assert not m.named("Melanie") and not m.named(None) and not m.named("")
    assert SpeakerMatcher("Where does Lopez work?").named("Mira Lopez")
    assert SpeakerMatcher("what did mira_l say").named("mira_l")
    # a name made of stop words never matches a query full of them
    assert not SpeakerMatcher("what did I say to you").named("I")


def test_context_lift_takes_the_best_nearby_turn_of_the_same_group() -> None:
    scores = {"a": 0.1, "b": 0.9, "c": 0.2, "d": 0.3, "x": 1.0}
    place = {"a": ("s1", 1), "b": ("s1", 2), "c": ("s1", 5), "d": ("s1", 9), "x": ("s2", 2)}
    out = context_lift(scores, place, window=3)
    assert out["a"] == (0.9, "b")  # one turn away
    assert out["b"] == (0.9, "b")  # its own score counts
    assert out["c"] == (0.9, "b")  # three turns away: still inside the window
    assert out["d"] == (0.3, "d")  # four turns from c, seven from b: only itself
    assert out["x"] == (1.0, "x")  # another session is never "nearby"
    assert context_lift(scores, {"zz": ("s1", 1)}, window=3) == {}  # places without scores


# ---------------------------------------------------------------------------- lexical context


def test_encode_document_with_context_adds_its_terms_and_expects_two_turns() -> None:
    plain = lexical.encode_document("Yes, three agencies already!")
    turn = lexical.encode_document("Yes, three agencies already!", context="Have you looked into adoption?")
    adoption = lexical.term_id("adoption")
    assert adoption in turn.indices and adoption not in plain.indices
    # a first turn (empty context) is normalised like the other turns, so it scores
    # higher per term than the same text indexed as a stand-alone document
    first = lexical.encode_document("Yes, three agencies already!", context="")
    agencies = lexical.term_id("agencie")
    weight = dict(zip(first.indices, first.values, strict=True))[agencies]
    assert weight > dict(zip(plain.indices, plain.values, strict=True))[agencies]


def test_previous_turns_and_positions_follow_the_session(alice: tuple[Any, str]) -> None:
    from memos.plaintext.retrieval.turns import positions, previous_turns

    mos, cube = alice

    def say(session: str, *lines: tuple[str, str]) -> list[str]:
        res = mos.add(
            messages=[{"role": "user", "name": who, "content": text} for who, text in lines],
            user_id="alice",
            cube_id=cube,
            session_id=session,
            extract=False,
        )
        return [m.id for m in res.memories]

    a1, a2 = say("A", ("Sam", "Have you looked into adoption?"), ("Alice", "Yes, three agencies!"))
    (b1,) = say("B", ("Sam", "Any plans for the weekend?"))
    (a3,) = say("A", ("Alice", "One of them called back today."))  # stored after session B's turn
    note = mos.add(text="Alice likes adoption stories", user_id="alice", cube_id=cube).memories[0].id
    with mos.store.session() as s:
        before = previous_turns(s, [a1, a2, b1, a3, note])
        where = positions(s, [a1, a2, a3, note])
    assert before == {
        a1: "",  # first turn of its session
        a2: "Have you looked into adoption?",
        b1: "",
        a3: "Yes, three agencies!",  # found across the interleaved session B
    }
    assert set(where) == {a1, a2, a3}  # a memory that is not a turn has no place
    assert where[a1].session_id == "A" and where[a1].seq < where[a2].seq < where[a3].seq


# ---------------------------------------------------------------------------- boosts, end to end


def test_time_expression_in_the_query_ranks_the_memory_from_that_time_first(
    alice: tuple[Any, str],
) -> None:
    mos, cube = alice
    for month, session in (("2023-05-10", "s5"), ("2023-09-10", "s9")):
        mos.add(
            messages=[
                {
                    "role": "user",
                    "name": "Alice",
                    "content": "We went hiking in the Alps.",
                    "timestamp": f"{month}T10:00:00Z",
                }
            ],
            user_id="alice",
            cube_id=cube,
            session_id=session,
        )
    hits = mos.search("Where did we go hiking in May 2023?", user_id="alice", top_k=2)
    assert [h.memory.provenance.session_id for h in hits] == ["s5", "s9"]
    assert hits[0].scores["time"] > 1 and "time" not in hits[1].scores
    assert any("2023-05-01 to 2023-05-31" in w for w in hits[0].why)
    hits = mos.search("Where did we go hiking in September 2023?", user_id="alice", top_k=2)
    assert hits[0].memory.provenance.session_id == "s9"


def test_a_turn_by_the_person_the_query_names_ranks_first(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    for who, session in (("Sam", "s1"), ("Alice", "s2")):
        mos.add(
            messages=[{"role": "user", "name": who, "content": "I started learning the cello."}],
            user_id="alice",
            cube_id=cube,
            session_id=session,
        )
    for name in ("Alice", "Sam"):
        hits = mos.search(f"Which instrument is {name} learning?", user_id="alice", top_k=2)
        assert hits[0].memory.provenance.speaker == name
        assert hits[0].scores["speaker"] > 1 and "speaker" not in hits[1].scores
        assert f"spoken by {name}, whom the query names" in hits[0].why


def test_turns_next_to_a_strong_match_are_lifted_with_it(make_mos: Any) -> None:
    mos = make_mos(search={"speaker_boost": 0.0, "time_boost": 0.0})
    mos.add_user("alice")
    cube = mos.create_cube("alice", "c").id
    filler = "Sure, sounds good to me."
    for session, lines in (
        ("near", ["My grandmother taught me to bake sourdough bread.", filler]),
        ("far", ["The weather was grey all week.", filler]),
    ):
        mos.add(
            messages=[{"role": "user", "name": "Alice", "content": t} for t in lines],
            user_id="alice",
            cube_id=cube,
            session_id=session,
            extract=False,
        )
    hits = mos.search("Who taught Alice to bake sourdough bread?", user_id="alice", top_k=4)
    fillers = [h for h in hits if h.memory.text == filler]
    assert [h.memory.provenance.session_id for h in fillers] == ["near", "far"]
    near = fillers[0]
    assert near.scores["context"] > fillers[1].scores["context"]
    assert "1 turn after a closely matching turn of session near" in near.why
    # switched off: no lift, and no such reason
    mos.retriever.cfg = mos.retriever.cfg.model_copy(update={"context_weight": 0.0})
    hits = mos.search("Who taught Alice to bake sourdough bread?", user_id="alice", top_k=4)
    assert all("context" not in h.scores and not any("turn after" in w for w in h.why) for h in hits)


def test_rrf_fusion_is_still_available_and_explained(make_mos: Any) -> None:
    from memos.types import SearchHit

    mos = make_mos(search={"fusion": "rrf", "weight_dense": 1.0, "weight_lexical": 1.0})
    mos.add_user("alice")
    cube = mos.create_cube("alice", "c").id
    mos.add(text="Mira lives in Tromsø", user_id="alice", cube_id=cube)
    mos.add(text="The cat sleeps all day", user_id="alice", cube_id=cube)
    hits: list[SearchHit] = mos.search("Where does Mira live?", user_id="alice", top_k=2)
    top = hits[0]
    assert top.memory.text == "Mira lives in Tromsø"
    assert top.scores["fused"] == pytest.approx(2 / 61, abs=1e-6)  # rank 1 on both paths
    assert top.ranks == {"dense": 1, "lexical": 1}
    assert "shares words: live, mira (rank 1)" in top.why


def test_a_reply_is_found_through_the_turn_it_answers(alice: tuple[Any, str]) -> None:
    mos, cube = alice
    mos.add(
        messages=[
            {"role": "user", "name": "Sam", "content": "Have you looked into adoption agencies?"},
            {"role": "user", "name": "Alice", "content": "Yes! Three of them, all lovely."},
            {"role": "user", "name": "Sam", "content": "How was the weather on your trip?"},
            {"role": "user", "name": "Alice", "content": "Grey and rainy, all week."},
        ],
        user_id="alice",
        cube_id=cube,
        session_id="s1",
        extract=False,
    )
    hits = mos.search("adoption agencies", user_id="alice", top_k=4, filters={"speaker": "Alice"})
    top = hits[0]
    assert top.memory.text == "Yes! Three of them, all lovely."
    assert "lexical" in top.ranks
    assert any("answers a turn with: adoption, agencie" in w for w in top.why)


def test_graph_candidates_obey_the_filters(alice: tuple[Any, str]) -> None:
    """Graph candidates come from rows, not from the filtered index: the filter is
    checked on their rows (with every kind of condition)."""
    mos, cube = alice
    mos.retriever.cfg = mos.retriever.cfg.model_copy(update={"weight_graph": 0.5})  # off by default
    said = [
        ("Sam", "My sister Mira lives in Lisbon.", ["family"], {"topic": "family"}),
        ("Alice", "Mira visited us in May, she brought pastries.", [], {"topic": "visits"}),
        ("Alice", "I met Mira at the market yesterday.", ["town"], {}),
        ("Sam", "Mira starts a new job as a nurse.", [], {"topic": "work"}),
    ]
    for i, (who, text, tags, meta) in enumerate(said):
        mos.add(
            messages=[
                {"role": "user", "name": who, "content": text, "timestamp": f"2024-05-0{i + 1}T10:00:00Z"}
            ],
            user_id="alice",
            cube_id=cube,
            session_id="s1",
            tags=tags,
            metadata=meta,
        )
    everything = mos.search("Mira", user_id="alice", top_k=20)
    assert any("graph" in h.ranks for h in everything)
    assert {h.memory.provenance.speaker for h in everything if h.memory.type == "episode"} == {"Sam", "Alice"}
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"speaker": "Sam"}, lambda m: m.provenance.speaker == "Sam"),
        ({"type": "episode"}, lambda m: m.type == "episode"),
        ({"tags": "family"}, lambda m: "family" in m.tags),
        ({"metadata.topic": ["visits", "work"]}, lambda m: m.metadata.get("topic") in {"visits", "work"}),
        ({"session_id": "s1", "role": "user"}, lambda m: m.provenance.session_id == "s1"),
    ]
    for filters, holds in cases:
        hits = mos.search("Mira", user_id="alice", top_k=20, filters=filters)
        assert hits and all(holds(h.memory) for h in hits), filters
    early = mos.search("Mira", user_id="alice", top_k=20, time_range=("2024-05-01", "2024-05-02T23:00:00Z"))
    assert early and all(
        h.memory.text in {said[0][1], said[1][1]} for h in early if h.memory.type == "episode"
    )


def test_a_hit_carries_the_whole_memory_as_get_returns_it(alice: tuple[Any, str]) -> None:
    """Every field of a returned memory comes through as ``get`` gives it (metadata, tags,
    provenance, times, the version an update made); only the access statistics move."""
    mos, cube = alice
    res = mos.add(
        messages=[
            {
                "role": "user",
                "name": "Alice",
                "content": "I keep bees on the roof of the bakery.",
                "id": "b1",
                "timestamp": "2024-05-02T10:30:00Z",
            },
            {"role": "assistant", "content": "How many hives do you have?", "id": "b2"},
        ],
        user_id="alice",
        cube_id=cube,
        session_id="s9",
        metadata={"topic": "hobbies", "nested": {"ok": True, "n": [1, 2]}},
        tags=["bees", "roof"],
        importance=0.8,
    )
    first = res.memories[0]
    mos.update(first.id, user_id="alice", importance=0.9, reason="matters")
    hits = mos.search("bees on the bakery roof", user_id="alice")
    hit = next(h for h in hits if h.memory.id == first.id)
    got = mos.get(first.id, user_id="alice")
    assert hit.memory.model_dump(exclude={"hits", "last_accessed"}) == got.model_dump(
        exclude={"hits", "last_accessed"}
    )
    assert hit.memory.version == 2 and hit.memory.importance == 0.9
    assert hit.memory.metadata["nested"] == {"ok": True, "n": [1, 2]} and hit.memory.tags == ["bees", "roof"]
    assert hit.memory.provenance.message_id == "b1" and hit.memory.provenance.timestamp is not None
    assert hit.memory.recorded_at.tzinfo is not None
