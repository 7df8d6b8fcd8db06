"""What ``add``, ``update`` and ``search`` refuse, and that a refusal writes nothing.

Bad input is an :class:`~memos.errors.InvalidInput` raised before the first write: values
JSON cannot hold (NaN, infinities), strings that are not Unicode (lone surrogates), and
metadata or tags past the configured bounds. Each test checks that the home is as it was
(rows, index points, nothing pending) and, where a bad row used to get in, that the home
still opens. Runs on both relational backends.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from memos.core import MemOS
from memos.errors import InvalidInput

SURROGATE = "\ud800"
NON_FINITE = [float("nan"), float("inf"), float("-inf")]


def snapshot(mos: MemOS) -> tuple[Any, ...]:
    s = mos.stats()
    return s["memories"], s["index_points"], s["index_pending"], s["by_state"]


def refused(mos: MemOS, call: Callable[[], Any], match: str) -> None:
    """``call`` raises InvalidInput matching ``match`` and leaves the home as it was."""
    before = snapshot(mos)
    with pytest.raises(InvalidInput, match=match):
        call()
    assert snapshot(mos) == before


def nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth - 1):
        node["a"] = {}
        node = node["a"]
    return root


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
def test_non_finite_metadata_is_refused_before_anything_is_written(
    value: float, make_mos: Callable[..., MemOS], tmp_path: Path
) -> None:
    """NaN used to be committed and then fail indexing: the home no longer opened."""
    mos = make_mos(tmp_path / "h")
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    mid = mos.add(text="Alice likes tea", user_id="alice", cube_id=cube).memories[0].id
    for meta in ({"x": value}, {"a": [1, {"b": value}]}, {"deep": {"er": [[value]]}}):
        refused(
            mos, partial(mos.add, text="x", user_id="alice", cube_id=cube, metadata=meta), "JSON cannot hold"
        )
        msg = [{"role": "user", "content": "ok"}, {"role": "user", "content": "x", "metadata": meta}]
        refused(
            mos, partial(mos.add, messages=msg, user_id="alice", cube_id=cube), r"messages\[1\]\.metadata"
        )
        refused(mos, partial(mos.update, mid, user_id="alice", metadata=meta), "JSON cannot hold")
    assert mos.get(mid, user_id="alice").metadata == {}
    mos.close()
    again = make_mos(tmp_path / "h")  # opens: nothing unindexable got in
    assert again.stats()["memories"] == 1 and again.stats()["index_pending"] == 0
    assert [h.memory.id for h in again.search("tea", user_id="alice")] == [mid]


def test_metadata_error_names_the_value(alice: tuple[MemOS, str]) -> None:
    mos, cube = alice
    with pytest.raises(InvalidInput, match=r"metadata\['a'\]\[1\]\['b'\] is nan"):
        mos.add(text="x", user_id="alice", cube_id=cube, metadata={"a": [1, {"b": float("nan")}]})


def _surrogate_calls(mos: MemOS, cube: str, mid: str) -> dict[str, Callable[[], Any]]:
    S = SURROGATE
    add = mos.add

    def msgs(**extra: Any) -> Callable[[], Any]:
        return lambda: add(
            messages=[{"role": "user", "content": "hi", **extra}], user_id="alice", cube_id=cube
        )

    return {
        "text": lambda: add(text=f"broken {S} text", user_id="alice", cube_id=cube),
        "tag": lambda: add(text="x", user_id="alice", cube_id=cube, tags=["ok", f"t{S}"]),
        "metadata key": lambda: add(text="x", user_id="alice", cube_id=cube, metadata={f"k{S}": 1}),
        "metadata value": lambda: add(text="x", user_id="alice", cube_id=cube, metadata={"k": [f"v{S}"]}),
        "session id": lambda: add(text="x", user_id="alice", cube_id=cube, session_id=f"s{S}"),
        "user id": lambda: add(text="x", user_id=f"alice{S}", cube_id=cube),
        "cube id": lambda: add(text="x", user_id="alice", cube_id=f"{cube}{S}"),
        "message content": msgs(content=f"hi {S}"),
        "message name": msgs(name=f"Al{S}"),
        "message id": msgs(id=f"m{S}"),
        "message role": msgs(role=f"user{S}"),
        "message metadata": msgs(metadata={"where": {S: "x"}}),
        "update text": lambda: mos.update(mid, user_id="alice", text=f"new {S}"),
        "update tags": lambda: mos.update(mid, user_id="alice", tags=[S]),
        "update metadata": lambda: mos.update(mid, user_id="alice", metadata={"k": S}),
        "update memory id": lambda: mos.update(f"{mid}{S}", user_id="alice", text="new"),
        "search query": lambda: mos.search(f"tea {S}", user_id="alice"),
        "search filter": lambda: mos.search("tea", user_id="alice", filters={"tags": [S]}),
        "search metadata filter": lambda: mos.search("tea", user_id="alice", filters={f"metadata.{S}": "x"}),
        "search user": lambda: mos.search("tea", user_id=S),
        "get": lambda: mos.get(S, user_id="alice"),
    }


def test_lone_surrogates_are_invalid_input(alice: tuple[MemOS, str]) -> None:
    """A string that is not Unicode used to reach SQLite or the embedder and fail there
    (UnicodeEncodeError, TypeError); now each is refused up front, naming where it is."""
    mos, cube = alice
    mid = mos.add(text="Alice likes tea", user_id="alice", cube_id=cube, tags=["drinks"]).memories[0].id
    for what, call in _surrogate_calls(mos, cube, mid).items():
        before = snapshot(mos)
        with pytest.raises(InvalidInput, match="lone surrogate") as info:
            call()
        assert snapshot(mos) == before, what
        assert "\\ud800" in str(info.value), what  # the message shows the character, escaped
    assert mos.get(mid, user_id="alice").text == "Alice likes tea"
    assert mos.get(mid, user_id="alice").tags == ["drinks"]


def test_metadata_and_tags_are_bounded_by_default(alice: tuple[MemOS, str]) -> None:
    """Deep nesting used to raise RecursionError; 5 MB of metadata and 20,000 tags got in."""
    mos, cube = alice

    def add(**kw: Any) -> Callable[[], Any]:
        return lambda: mos.add(text="x", user_id="alice", cube_id=cube, **kw)

    refused(
        mos, add(metadata=nested(5000)), r"nested more than 20 levels deep \(setting max_metadata_depth\)"
    )
    refused(
        mos, add(metadata={"blob": "x" * 5_000_000}), r"limit of 65,536 bytes \(setting max_metadata_bytes\)"
    )
    refused(mos, add(metadata={"k": list(range(100_000))}), "setting max_metadata_bytes")
    refused(
        mos,
        add(tags=[f"t{i}" for i in range(20_000)]),
        r"20,000 tags, more than the limit of 100 \(setting max_tags\)",
    )
    refused(mos, add(tags=["ok", "t" * 5000]), r"tags\[1\] has 5,000 characters.*max_tag_chars")
    loop: list[Any] = []
    loop.append(loop)
    refused(mos, add(metadata={"loop": loop}), "nested more than")
    # at the bounds: accepted
    ok = mos.add(
        text="x", user_id="alice", cube_id=cube, metadata=nested(20), tags=[f"t{i}" for i in range(100)]
    )
    assert ok.memories[0].tags[-1] == "t99"


def test_bounds_are_settings(make_mos: Callable[..., MemOS], tmp_path: Path) -> None:
    mos = make_mos(tmp_path / "h", max_metadata_bytes=40, max_metadata_depth=2, max_tags=2, max_tag_chars=5)
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id

    def add(**kw: Any) -> Callable[[], Any]:
        return lambda: mos.add(text="x", user_id="alice", cube_id=cube, **kw)

    mos.add(text="x", user_id="alice", cube_id=cube, metadata={"a": {"b": 1}}, tags=["one", "two"])
    refused(mos, add(metadata={"a": {"b": [1]}}), "nested more than 2 levels")
    refused(mos, add(metadata={"a": "é" * 20}), r"is 49 bytes as JSON, more than the limit of 40")
    refused(mos, add(tags=["a", "b", "c"]), "more than the limit of 2")
    refused(mos, add(tags=["sixsix"]), "more than the limit of 5")
    msg = [{"role": "user", "content": "hi", "metadata": {"a": {"b": {"c": 1}}}}]
    refused(
        mos,
        lambda: mos.add(messages=msg, user_id="alice", cube_id=cube),
        r"messages\[0\]\.metadata is nested",
    )
    # each within the bound, together (as stored) past it
    msg = [{"role": "user", "content": "hi", "metadata": {"b": "y" * 25}}]
    call = partial(mos.add, messages=msg, user_id="alice", cube_id=cube, metadata={"a": "x" * 25})
    refused(mos, call, r"messages\[0\]\.metadata with the call's metadata is .*limit of 40 bytes")
    mid = mos.list_memories(user_id="alice", cube_id=cube).items[0].id
    refused(mos, lambda: mos.update(mid, user_id="alice", tags=["a", "b", "c"]), "max_tags")
    refused(mos, lambda: mos.update(mid, user_id="alice", metadata={"x": "y" * 50}), "max_metadata_bytes")
