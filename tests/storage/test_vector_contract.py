"""One contract every VectorIndex passes, run on the real engines.

Backends: the embedded Qdrant Edge shard (in ``tmp_path``), and qdrant-client's
in-process mode both in memory and on disk (``path=``). Vectors are small and handmade;
lexical vectors come from :mod:`memos.plaintext.retrieval.lexical`, as in production.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from memos.errors import ConfigError, InvalidFilter, InvalidInput, StorageError
from memos.plaintext.retrieval.lexical import encode_document, encode_query
from memos.protocols import (
    FieldMatch,
    FieldRange,
    IndexFilter,
    IndexPoint,
    SparseVector,
    VectorIndex,
)

DIM = 8

# Opens an index under a test's tmp_path with the given dimension.
Opener = Callable[[Path, int], VectorIndex]


def _edge(path: Path, dim: int) -> VectorIndex:
    from memos.storage.vector.qdrant_edge import QdrantEdgeIndex

    return QdrantEdgeIndex(path / "edge", dim)


def _client_memory(path: Path, dim: int) -> VectorIndex:
    from memos.storage.vector.qdrant_server import QdrantServerIndex

    return QdrantServerIndex(dim, location=":memory:")


def _client_path(path: Path, dim: int) -> VectorIndex:
    from memos.storage.vector.qdrant_server import QdrantServerIndex

    return QdrantServerIndex(dim, path=str(path / "qdrant"))


# name -> (opener, whether the index persists across close and reopen)
BACKENDS: dict[str, tuple[Opener, bool]] = {
    "qdrant_edge": (_edge, True),
    "qdrant_client_memory": (_client_memory, False),
    "qdrant_client_path": (_client_path, True),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> tuple[Opener, bool]:
    return BACKENDS[request.param]


@pytest.fixture
def index(backend: tuple[Opener, bool], tmp_path: Path) -> Iterator[VectorIndex]:
    opener, _ = backend
    idx = opener(tmp_path, DIM)
    yield idx
    idx.close()


def _unit(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def _rand_vec(rng: random.Random) -> list[float]:
    return _unit([rng.uniform(-1, 1) for _ in range(DIM)])


def _point(
    cube: str, dense: list[float], text: str = "", mid: str | None = None, **payload: Any
) -> IndexPoint:
    return IndexPoint(
        id=mid or str(uuid.uuid4()),
        dense=dense,
        sparse=encode_document(text),
        payload={"cube_id": cube, **payload},
    )


def _only(*cubes: str, must: tuple[FieldMatch | FieldRange, ...] = ()) -> IndexFilter:
    return IndexFilter(cube_ids=cubes, must=must)


def test_satisfies_protocol(index: VectorIndex) -> None:
    assert isinstance(index, VectorIndex)
    assert index.name in {"qdrant_edge", "qdrant"}


def test_optimize_is_part_of_the_protocol(index: VectorIndex) -> None:
    """Every index answers ``optimize`` and ``unoptimized_points`` (a no-op and 0 where
    the engine needs no such step), so the kernel never sniffs for them."""
    rng = random.Random(3)
    index.upsert([_point("A", _rand_vec(rng)), _point("A", _rand_vec(rng))])
    pending = index.unoptimized_points
    assert isinstance(pending, int) and pending in (0, 2)
    done = index.optimize()
    assert isinstance(done, bool) and index.unoptimized_points == 0
    if pending == 0:
        assert done is False  # nothing counted: nothing to build
    assert index.count("A") == 2


def test_upsert_is_idempotent_and_replaces_payload(index: VectorIndex) -> None:
    rng = random.Random(1)
    mid = str(uuid.uuid4())
    vec = _rand_vec(rng)
    index.upsert([_point("A", vec, "first text", mid=mid, type="fact")])
    index.upsert([_point("A", vec, "first text", mid=mid, type="episode")])
    assert index.count("A") == 1
    assert index.ids("A") == {mid}
    hits = index.search_dense(vec, _only("A", must=(FieldMatch("type", ("episode",)),)), 5)
    assert [h.id for h in hits] == [mid]
    assert index.search_dense(vec, _only("A", must=(FieldMatch("type", ("fact",)),)), 5) == []


def test_dense_search_ranks_own_vector_first(index: VectorIndex) -> None:
    rng = random.Random(2)
    points = [_point("A", _rand_vec(rng)) for _ in range(30)]
    index.upsert(points)
    for p in points[:5]:
        hits = index.search_dense(list(p.dense), _only("A"), 3)
        assert hits[0].id == p.id
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert len(hits) == 3
        assert hits[0].score >= hits[1].score >= hits[2].score


def test_sparse_search_prefers_rare_term(index: VectorIndex) -> None:
    rng = random.Random(3)
    common = [_point("A", _rand_vec(rng), f"we talked about the weather again, day {i}") for i in range(8)]
    rare = _point("A", _rand_vec(rng), "we talked about the weather and pottery")
    index.upsert([*common, rare])
    hits = index.search_sparse(encode_query("weather pottery"), _only("A"), 5)
    assert hits[0].id == rare.id
    assert hits[0].score > hits[1].score
    # A query with no known term, or no term at all, finds nothing.
    assert index.search_sparse(encode_query("xylophone"), _only("A"), 5) == []
    assert index.search_sparse(encode_query("the and of"), _only("A"), 5) == []


def test_both_searches_in_one_call_match_the_separate_ones(index: VectorIndex) -> None:
    rng = random.Random(31)
    words = ["pottery", "hiking", "violin", "garden", "chess", "sailing"]
    points = [
        _point(
            "A" if i % 3 else "B",
            _rand_vec(rng),
            f"{words[i % 6]} with {words[(i * 5) % 6]} note {i}",
            type="fact" if i % 2 else "episode",
        )
        for i in range(40)
    ]
    index.upsert(points)
    query = encode_query("pottery garden hiking chess")
    for flt in (_only("A"), _only("A", "B"), _only("A", must=(FieldMatch("type", ("fact",)),))):
        for p in points[:4]:
            dense, sparse = index.search_both(list(p.dense), query, flt, 7)
            assert dense == index.search_dense(list(p.dense), flt, 7)
            assert sparse == index.search_sparse(query, flt, 7)
            assert len(dense) == 7 and sparse  # both paths answered
    vec = list(points[0].dense)
    # either side may be left out, or have nothing to ask: its list is empty
    assert index.search_both(None, query, _only("A"), 5) == ([], index.search_sparse(query, _only("A"), 5))
    assert index.search_both(vec, None, _only("A"), 5) == (index.search_dense(vec, _only("A"), 5), [])
    assert index.search_both(vec, encode_query("the and of"), _only("A"), 5)[1] == []
    assert index.search_both(None, None, _only("A"), 5) == ([], [])
    # no cube, or a cube with nothing in it: nothing, from either path
    assert index.search_both(vec, query, IndexFilter(cube_ids=()), 5) == ([], [])
    assert index.search_both(vec, query, _only("C"), 5) == ([], [])
    with pytest.raises(InvalidInput):
        index.search_both([1.0] * (DIM + 1), query, _only("A"), 5)


def test_cube_isolation(index: VectorIndex) -> None:
    rng = random.Random(4)
    a = [_point("A", _rand_vec(rng), "Caroline went hiking") for _ in range(5)]
    b = [_point("B", list(p.dense), "Caroline went hiking") for p in a]  # identical content
    index.upsert([*a, *b])
    ids_a = {p.id for p in a}
    for p in a:
        assert {h.id for h in index.search_dense(list(p.dense), _only("A"), 10)} <= ids_a
    assert {h.id for h in index.search_sparse(encode_query("caroline hiking"), _only("A"), 10)} == ids_a
    both = index.search_dense(list(a[0].dense), _only("A", "B"), 10)
    assert {h.id for h in both} == ids_a | {p.id for p in b}
    assert index.search_dense(list(a[0].dense), IndexFilter(cube_ids=()), 10) == []
    assert index.search_dense(list(a[0].dense), _only("C"), 10) == []


def test_isolation_holds_as_the_shards_cubes_change(backend: tuple[Opener, bool], tmp_path: Path) -> None:
    """The Edge index drops the cube condition when a search names every cube with points;
    whatever it tracks for that, no search may return another cube's points — after the
    first search, after new cubes arrive, after a cube is deleted and after a reopen."""
    opener, persists = backend
    rng = random.Random(41)
    idx = opener(tmp_path, DIM)
    a = [_point("A", _rand_vec(rng), "harbour walk") for _ in range(6)]
    b = [_point("B", list(p.dense), "harbour walk") for p in a]
    ids_a, ids_b = {p.id for p in a}, {p.id for p in b}

    def found(*cubes: str, must: tuple[FieldMatch | FieldRange, ...] = ()) -> set[str]:
        dense = {h.id for p in a[:3] for h in idx.search_dense(list(p.dense), _only(*cubes, must=must), 20)}
        sparse = {h.id for h in idx.search_sparse(encode_query("harbour"), _only(*cubes, must=must), 20)}
        return dense | sparse

    try:
        idx.upsert(a)
        assert found("A") == ids_a  # every point is A's
        idx.upsert(b)  # a cube the first search did not know
        assert found("A") == ids_a
        assert found("A", "B") == ids_a | ids_b
        assert found("B", must=(FieldMatch("cube_id", ("B",)),)) == ids_b
        idx.delete_cube("B")
        assert found("A", "B") == ids_a
        idx.upsert(b[:2])
        assert found("A") == ids_a
        if persists:
            idx.close()
            idx = opener(tmp_path, DIM)
            assert found("A") == ids_a
            assert found("B") == {p.id for p in b[:2]}
    finally:
        idx.close()


def test_field_match_scalar_list_bool_and_nested(index: VectorIndex) -> None:
    rng = random.Random(5)
    p1 = _point(
        "A",
        _rand_vec(rng),
        speaker="Caroline",
        tags=["art", "family"],
        pinned=True,
        turn=3,
        metadata={"topic": "painting"},
    )
    p2 = _point(
        "A",
        _rand_vec(rng),
        speaker="Melanie",
        tags=["sport"],
        pinned=False,
        turn=7,
        metadata={"topic": "running"},
    )
    p3 = _point("A", _rand_vec(rng), speaker="Caroline", tags=[], turn=9)
    index.upsert([p1, p2, p3])
    q = list(p1.dense)

    def found(*must: FieldMatch | FieldRange) -> set[str]:
        return {h.id for h in index.search_dense(q, _only("A", must=must), 10)}

    assert found(FieldMatch("speaker", ("Caroline",))) == {p1.id, p3.id}
    assert found(FieldMatch("speaker", ("Melanie", "Nobody"))) == {p2.id}
    assert found(FieldMatch("tags", ("family",))) == {p1.id}  # list payload: contains
    assert found(FieldMatch("tags", ("sport", "art"))) == {p1.id, p2.id}
    assert found(FieldMatch("turn", (3, 9))) == {p1.id, p3.id}
    assert found(FieldMatch("pinned", (True,))) == {p1.id}
    assert found(FieldMatch("pinned", (False,))) == {p2.id}
    assert found(FieldMatch("metadata.topic", ("running",))) == {p2.id}
    assert found(FieldMatch("speaker", ("Caroline",)), FieldMatch("tags", ("art",))) == {p1.id}
    assert found(FieldMatch("speaker", ())) == set()  # any of nothing


def test_field_range_on_ts(index: VectorIndex) -> None:
    rng = random.Random(6)
    points = [_point("A", _rand_vec(rng), ts=float(t)) for t in (100, 200, 300, 400)]
    index.upsert(points)
    q = list(points[0].dense)

    def found(gte: float | None, lte: float | None) -> set[str]:
        flt = _only("A", must=(FieldRange("ts", gte=gte, lte=lte),))
        return {h.id for h in index.search_dense(q, flt, 10)}

    ids = [p.id for p in points]
    assert found(200, 300) == {ids[1], ids[2]}
    assert found(None, 150) == {ids[0]}
    assert found(350, None) == {ids[3]}
    assert found(None, None) == set(ids)


def test_delete_delete_cube_ids_count(index: VectorIndex) -> None:
    rng = random.Random(7)
    a = [_point("A", _rand_vec(rng), "alpha") for _ in range(4)]
    b = [_point("B", _rand_vec(rng), "beta") for _ in range(3)]
    index.upsert([*a, *b])
    assert index.count() == 7
    assert index.count("A") == 4
    assert index.ids("B") == {p.id for p in b}

    index.delete([a[0].id, str(uuid.uuid4())])  # unknown ids are ignored
    assert index.ids("A") == {p.id for p in a[1:]}
    assert a[0].id not in {h.id for h in index.search_dense(list(a[0].dense), _only("A"), 10)}

    index.delete_cube("B")
    assert index.count("B") == 0
    assert index.ids("B") == set()
    assert index.count() == 3
    assert index.search_sparse(encode_query("beta"), _only("B"), 10) == []
    index.delete([])
    index.upsert([])


def test_ids_pages_through_many_points(index: VectorIndex) -> None:
    rng = random.Random(8)
    points = [_point("A", _rand_vec(rng)) for _ in range(2500)]  # more than one scroll page
    index.upsert(points)
    assert index.ids("A") == {p.id for p in points}
    assert index.count("A") == 2500


def test_persistence_round_trip(backend: tuple[Opener, bool], tmp_path: Path) -> None:
    opener, persists = backend
    if not persists:
        pytest.skip("in-memory backend")
    rng = random.Random(9)
    points = [
        _point("A", _rand_vec(rng), f"note number {i} about pottery" if i == 0 else "note") for i in range(5)
    ]
    idx = opener(tmp_path, DIM)
    idx.upsert(points)
    idx.flush()
    idx.close()
    idx.close()  # twice is harmless
    with pytest.raises(StorageError):
        idx.count()

    idx = opener(tmp_path, DIM)
    try:
        assert idx.ids("A") == {p.id for p in points}
        assert idx.search_dense(list(points[3].dense), _only("A"), 1)[0].id == points[3].id
        assert idx.search_sparse(encode_query("pottery"), _only("A"), 1)[0].id == points[0].id
        assert idx.search_dense(list(points[0].dense), _only("A", must=(FieldMatch("cube_id", ("A",)),)), 1)
    finally:
        idx.close()


def test_second_open_of_same_path_is_refused(backend: tuple[Opener, bool], tmp_path: Path) -> None:
    opener, persists = backend
    if not persists:
        pytest.skip("in-memory backend")
    idx = opener(tmp_path, DIM)
    try:
        with pytest.raises(StorageError):
            opener(tmp_path, DIM)
    finally:
        idx.close()
    opener(tmp_path, DIM).close()  # free again once closed


def test_dimension_mismatch(backend: tuple[Opener, bool], tmp_path: Path, index: VectorIndex) -> None:
    rng = random.Random(10)
    with pytest.raises(InvalidInput):
        index.upsert([_point("A", _rand_vec(rng)[:5])])
    with pytest.raises(InvalidInput):
        index.search_dense([0.1] * (DIM + 1), _only("A"), 3)
    with pytest.raises(InvalidInput):
        index.upsert(
            [
                IndexPoint(
                    id="not-a-uuid",
                    dense=_rand_vec(rng),
                    sparse=SparseVector([], []),
                    payload={"cube_id": "A"},
                )
            ]
        )
    with pytest.raises(InvalidInput):
        index.upsert(
            [IndexPoint(id=str(uuid.uuid4()), dense=_rand_vec(rng), sparse=SparseVector([], []), payload={})]
        )
    with pytest.raises(InvalidInput):
        index.upsert(
            [
                IndexPoint(
                    id=str(uuid.uuid4()),
                    dense=_rand_vec(rng),
                    sparse=SparseVector([3, 3], [1.0, 1.0]),
                    payload={"cube_id": "A"},
                )
            ]
        )

    opener, persists = backend
    if persists:  # an existing index opened with another dimension
        index.upsert([_point("A", _rand_vec(rng))])
        index.close()
        with pytest.raises(ConfigError, match="dim|dimension"):
            opener(tmp_path, DIM * 2)
        opener(tmp_path, DIM).close()  # still opens with the right one


def test_concurrent_use_from_threads(index: VectorIndex) -> None:
    rng = random.Random(11)
    base = [_point("A", _rand_vec(rng), "shared words") for _ in range(50)]
    index.upsert(base)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for p in base[:20]:
                assert index.search_dense(list(p.dense), _only("A"), 1)[0].id == p.id
                index.search_sparse(encode_query("shared"), _only("A"), 5)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    def writer(seed: int) -> None:
        local = random.Random(seed)
        try:
            for _ in range(20):
                index.upsert([_point("B", _rand_vec(local), "other")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    threads += [threading.Thread(target=writer, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert index.count("B") == 40


@pytest.mark.parametrize("key", ["a b", "a..b", ".a", "a.", "a[]b"])
def test_malformed_filter_key(index: VectorIndex, key: str) -> None:
    index.upsert([_point("A", _rand_vec(random.Random(12)))])
    with pytest.raises(InvalidFilter):
        index.search_dense([0.1] * DIM, _only("A", must=(FieldMatch(key, ("x",)),)), 3)
    with pytest.raises(InvalidFilter):
        index.search_sparse(encode_query("x"), _only("A", must=(FieldRange(key, gte=1.0),)), 3)


def test_package_import_does_not_load_qdrant() -> None:
    code = (
        "import sys, memos.storage.vector; "
        "assert not any(m.startswith(('qdrant_edge', 'qdrant_client')) for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_backends_score_lexical_search_alike(tmp_path: Path) -> None:
    """Same points, same query: the embedded and server indexes give the same BM25 scores."""
    texts = [
        "Caroline went to the LGBTQ support group on 7 May 2023",
        "Melanie painted a sunrise",
        "Caroline is researching adoption agencies",
        "Melanie ran a charity race for mental health",
    ]
    rng = random.Random(13)
    points = [_point("A", _rand_vec(rng), text) for text in texts]
    query = encode_query("When did Caroline go to the support group?")
    results = []
    for opener, _ in BACKENDS.values():
        idx = opener(tmp_path, DIM)
        try:
            idx.upsert(points)
            results.append({h.id: h.score for h in idx.search_sparse(query, _only("A"), 10)})
        finally:
            idx.close()
    first = results[0]
    assert max(first, key=first.__getitem__) == points[0].id
    for other in results[1:]:
        assert other.keys() == first.keys()
        for mid, score in first.items():
            assert other[mid] == pytest.approx(score, rel=1e-4)


def test_edge_optimize_releases_the_segments_it_replaced(tmp_path: Path) -> None:
    """Qdrant Edge keeps replaced segments on disk and mapped until the shard closes;
    ``optimize`` reopens it, so they go at once, and the index keeps working."""
    from memos.storage.vector.qdrant_edge import QdrantEdgeIndex

    rng = random.Random(5)
    idx = QdrantEdgeIndex(tmp_path / "edge", DIM)
    try:
        points = [_point("a", _rand_vec(rng), f"note {i}") for i in range(3000)]
        idx.upsert(points)
        idx.delete([p.id for p in points[:1500]])  # half deleted: the vacuum rewrites the segment
        segments = tmp_path / "edge" / "segments"
        before = {d.name for d in segments.iterdir()}
        assert idx.optimize() is True
        after = {d.name for d in segments.iterdir()}
        assert after and not (after & before)  # the old segment is gone, not just unused
        assert idx.count("a") == 1500
        kept = points[2000]
        assert idx.search_dense(kept.dense, _only("a"), 1)[0].id == kept.id
        extra = _point("a", _rand_vec(rng), "after optimize")
        idx.upsert([extra])
        assert idx.count() == 1501 and extra.id in idx.ids("a")
    finally:
        idx.close()


def test_edge_knows_when_a_search_covers_every_cube(tmp_path: Path) -> None:
    """The shortcut's condition itself: taken only when the named cubes hold every point."""
    from memos.storage.vector import qdrant_edge
    from memos.storage.vector.qdrant_edge import QdrantEdgeIndex

    rng = random.Random(6)
    idx = QdrantEdgeIndex(tmp_path / "edge", DIM)
    try:
        idx.upsert([_point("A", _rand_vec(rng)), _point("B", _rand_vec(rng))])

        def covers(*cubes: str) -> bool:
            with idx._engine("test") as shard:
                return idx._covers_all(shard, cubes)

        assert covers("A", "B") and covers("B", "A", "C")
        assert not covers("A")
        idx.delete_cube("B")
        assert covers("A")
        many = [_point(f"c{i}", _rand_vec(rng)) for i in range(qdrant_edge._MAX_TRACKED_CUBES + 1)]
        idx.upsert(many)  # too many cubes to track: never taken
        assert not covers("A", *(p.payload["cube_id"] for p in many))
    finally:
        idx.close()
