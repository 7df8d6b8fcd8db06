"""Issue 21's gaps in the policies: capacity by tokens, dedup confirmed by vectors, a
deleted cube retiring its KV prefixes and adapters, one spelling of the ``policy.apply``
job kind. Deterministic: every home runs on an injected clock that moves only when the
test says; the vectors are the bundled embedder's."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from memos.errors import InvalidInput
from memos.policies.base import Action, CubeView, MemoryView, Policy
from memos.policies.capacity import CapacityPolicy, CapacitySettings
from memos.policies.dedup import DedupPolicy, DedupSettings

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _mem(mid: str, **kw: Any) -> MemoryView:
    values: dict[str, Any] = {
        "id": mid, "type": "episode", "state": "active", "importance": 0.5, "tags": (), "metadata": {},
        "recorded_at": T0, "updated_at": T0, "retired_at": None, "hits": 0, "last_accessed": None,
        "session_id": None, "source_ids": (), "chars": 400,
    }  # fmt: skip
    values.update(kw)
    return MemoryView(**values)


def archived(report: Any, policy: str) -> list[str]:
    return [a.memory_id for c in report.cubes for o in c.outcomes if o.policy == policy for a in o.actions]


def active_chars(mos: Any, cube: str) -> list[int]:
    page = mos.list_memories(user_id="alice", cube_id=cube, limit=1000)
    return [len(m.text) for m in page.items]


# ------------------------------------------------------------------ capacity by tokens


def test_capacity_token_cap_archives_coldest_first_until_both_caps_hold() -> None:
    view = CubeView(
        "c",
        "alice",
        (
            _mem("warm", heat=3.0),
            _mem("cold", heat=0.5),
            _mem("colder", heat=0.2, chars=40),  # 10 tokens: archiving it frees little
            _mem("told", heat=9.0, recorded_at=T0 + timedelta(days=1)),  # covered by "fact": first
            _mem("fact", type="fact", heat=1.0, chars=99, source_ids=("told",)),  # ⌈99/4⌉ = 25 tokens
            _mem("kept", type="profile", heat=0.0, chars=4000),  # keep_types: outside both caps
        ),
    )
    decide = CapacityPolicy().decide
    keep = {"keep_types": ["profile"]}
    # 100 + 100 + 10 + 100 + 25 = 335 tokens: under 340 nothing, over 334 the covered episode goes
    assert decide(view, [], T0, CapacitySettings(max_tokens=335, **keep)) == []
    (first,) = decide(view, [], T0, CapacitySettings(max_tokens=334, **keep))
    assert first.memory_id == "told" and "~335 tokens > cap 334: covered by a derived memory" in first.reason
    # 135 tokens still too many after the covered one (235): then by heat, 10 freed by "colder" is not enough
    out = decide(view, [], T0, CapacitySettings(max_tokens=135, **keep))
    assert [a.memory_id for a in out] == ["told", "colder", "cold"]
    # both caps: the count holds after two, the tokens need the third
    both = decide(view, [], T0, CapacitySettings(max_active=3, max_tokens=135, **keep))
    assert [a.memory_id for a in both] == ["told", "colder", "cold"]
    assert "5 active > cap 3, ~335 tokens > cap 135" in both[0].reason
    # the count alone: two; a coarser estimate (8 chars a token: 168) fits 170
    by_count = decide(view, [], T0, CapacitySettings(max_active=3, **keep))
    assert [a.memory_id for a in by_count] == ["told", "colder"]
    assert decide(view, [], T0, CapacitySettings(max_tokens=170, chars_per_token=8, **keep)) == []
    # without keep_types the 1000-token profile counts, and is the coldest
    assert decide(view, [], T0, CapacitySettings(max_tokens=400))[1].memory_id == "kept"


def test_capacity_max_tokens_plan_is_apply_and_leaves_the_cube_under_the_cap(alice: Any) -> None:
    mos, cube = alice
    ids = [
        mos.add(text=f"note {i}: " + "the garden needs water " * (i + 1), type="episode",
                user_id="alice", cube_id=cube, extract=False).memories[0].id
        for i in range(5)
    ]  # fmt: skip
    tokens = sum(math.ceil(n / 4) for n in active_chars(mos, cube))
    with pytest.raises(InvalidInput, match=r"max_tokens' of the capacity policy"):
        mos.policies.set(cube, "capacity.max_tokens", -1, user_id="alice")
    assert mos.policies.settings(cube, user_id="alice")["capacity"]["max_tokens"] is None
    mos.policies.set(cube, "capacity.max_tokens", tokens // 2, user_id="alice")
    plan = mos.policies.plan()
    gone = archived(plan, "capacity")
    assert gone and set(gone) < set(ids)
    applied = mos.policies.apply()
    assert archived(applied, "capacity") == gone and applied.counts() == plan.counts()
    assert sum(math.ceil(n / 4) for n in active_chars(mos, cube)) <= tokens // 2
    assert archived(mos.policies.plan(), "capacity") == []  # under the cap: nothing more
    # archived, not lost: a search that asks for archived memories still finds them
    hits = mos.search("garden water", user_id="alice", include_archived=True, top_k=10)
    assert gone[0] in [h.memory.id for h in hits]


# ------------------------------------------------------------------ dedup confirmed by vectors


def _fact(mid: str, key: str, vector: tuple[float, ...] | None, **kw: Any) -> MemoryView:
    return _mem(mid, type="fact", text_key=key, vector=vector, **kw)


def test_dedup_vector_rule_needs_both_the_token_overlap_and_the_cosine() -> None:
    view = CubeView(
        "c",
        "alice",
        (
            _fact("a", "alice s sister mira lives in tromso", (1.0, 0.0, 0.0)),
            _fact("b", "mira the sister of alice lives in tromso", (0.97, 0.2431, 0.0)),  # J 0.67, cos 0.97
            _fact("c", "alice works at feedzai in lisbon", (0.0, 1.0, 0.0)),
            _fact("d", "alice works at google in lisbon", (0.0, 0.81, 0.5864)),  # J 0.71, cos 0.81
            _fact("e", "alice is vegetarian", (0.0, 0.0, 1.0)),
            _fact("f", "alice is not vegetarian", (0.0, 0.0, 1.0)),  # a negation in one only
            _fact("g", "bob likes green tea very much", None),  # no vector: never confirmed
            _fact("h", "bob likes green tea very much indeed", (0.5, 0.5, 0.0)),
        ),
    )
    policy = DedupPolicy()
    only = {"same_text": False, "same_relation": False}
    tokens = policy.decide(view, [], T0, DedupSettings(similarity=0.5, **only))
    assert [(m.memory_id, m.merged_ids) for m in tokens] == [("a", ("b",)), ("c", ("d",)), ("g", ("h",))]
    assert not policy.needs_vectors(DedupSettings(similarity=0.5))
    cfg = DedupSettings(similarity=0.5, vector_similarity=0.93, **only)
    assert policy.needs_vectors(cfg)
    (m,) = policy.decide(view, [], T0, cfg)
    assert (m.memory_id, m.merged_ids) == ("a", ("b",))
    assert m.reason == "1 duplicate fact(s): token overlap 0.67 ≥ 0.5 and cosine 0.97 ≥ 0.93"
    # the cosine alone merges nothing: the tokens must overlap first
    assert policy.decide(view, [], T0, DedupSettings(similarity=0.9, vector_similarity=0.5, **only)) == []
    with pytest.raises(ValueError, match="set similarity too"):
        DedupSettings(vector_similarity=0.9)


class VectorProbe(Policy):
    """Records the vectors the kernel gave it; asks for them when ``settings.enabled``."""

    name = "vector_probe"
    seen: ClassVar[list[dict[str, tuple[float, ...] | None]]] = []

    def needs_vectors(self, settings: Any) -> bool:
        return True

    def decide(self, view: CubeView, events: Any, now: datetime, settings: Any) -> list[Action]:
        VectorProbe.seen.append({m.id: m.vector for m in view.memories})
        return []


def test_the_kernel_embeds_statements_only_for_a_policy_that_needs_vectors_and_once_per_version(
    alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mos, cube = alice
    texts = [
        "Alice's sister Mira lives in Tromso",
        "Mira, the sister of Alice, lives in Tromso",
        "Alice works at Feedzai in Lisbon",
        "Alice works at Google in Lisbon",
        "Alice is vegetarian",
        "Alice is not vegetarian",
    ]
    ids = [
        mos.add(text=t, type="fact", user_id="alice", cube_id=cube, extract=False).memories[0].id
        for t in texts
    ]
    episode = (
        mos.add(text="we talked about Tromso", type="episode", user_id="alice", cube_id=cube, extract=False)
        .memories[0]
        .id
    )
    embedded: list[list[str]] = []
    real = mos.home.embedder.embed

    def counting(batch: Any) -> Any:
        embedded.append(list(batch))
        return real(batch)

    monkeypatch.setattr(mos.home.embedder, "embed", counting)
    mos.policies.plan()  # dedup on its defaults (exact duplicates): nothing embedded
    mos.policies.set(cube, "dedup.similarity", 0.5, user_id="alice")
    mos.policies.plan()
    assert embedded == []

    mos.policies.set(cube, "dedup.vector_similarity", 0.93, user_id="alice")
    plan = mos.policies.plan()
    assert [sorted(b) for b in embedded] == [sorted(texts)]  # the statements, not the episode
    (merge,) = archived_merges = [
        a for c in plan.cubes for o in c.outcomes if o.policy == "dedup" for a in o.actions
    ]
    assert (merge.memory_id, merge.merged_ids) == (ids[0], (ids[1],)) and "cosine 0.97" in merge.reason
    mos.policies.plan()
    assert len(embedded) == 1  # cached per version: not embedded at every plan
    mos.update(ids[3], user_id="alice", text="Alice works at Google in Zurich")
    embedded.clear()  # the update's own indexing embedded it too
    applied = mos.policies.apply()
    assert embedded[0] == ["Alice works at Google in Zurich"]  # the plan embedded only the new version
    assert [a.as_dict() for a in archived_merges] == [
        a.as_dict() for c in applied.cubes for o in c.outcomes if o.policy == "dedup" for a in o.actions
    ]
    assert mos.get(ids[1], user_id="alice").state == "superseded"
    assert {mos.get(i, user_id="alice").state for i in ids[4:]} == {"active"}  # contrary, not merged

    # any policy may ask: the vectors are the embedder's, for the live statements only
    VectorProbe.seen.clear()
    mos.policies.register(VectorProbe)
    mos.policies.plan()
    (seen,) = VectorProbe.seen
    vec = seen[ids[0]]
    assert vec is not None and len(vec) == mos.home.embedder.dim
    assert seen[episode] is None and seen[ids[1]] is None  # an episode; a superseded statement


def test_a_failing_embedder_fails_the_policies_that_need_vectors_and_the_others_run(
    alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mos, cube = alice
    told = mos.add(
        text="Alice likes tea", type="fact", user_id="alice", cube_id=cube, extract=False, tags=["tmp"]
    )
    mos.policies.set_many(
        cube, {"dedup.similarity": 0.5, "dedup.vector_similarity": 0.9, "ttl.tags.tmp": "1d"}, user_id="alice"
    )

    def down(batch: Any) -> Any:
        raise RuntimeError("embedder down")

    monkeypatch.setattr(mos.home.embedder, "embed", down)
    mos.clock.advance(days=2)
    report = mos.policies.apply()
    outcomes = {o.policy: o for o in report.cubes[0].outcomes}
    assert outcomes["dedup"].error == "could not embed the cube's statements: RuntimeError: embedder down"
    assert [(a.verb, a.memory_id) for a in outcomes["ttl"].actions] == [("expire", told.memories[0].id)]
    assert report.counts() == {"failed": 1, "expire": 1}


# ------------------------------------------------------------------ one job kind


def test_the_policy_job_kind_is_spelled_once_and_runs_policies(alice: Any) -> None:
    """``policy.apply`` is :data:`memos.scheduler.service.POLICY_JOB`: the scheduler's
    other modules import it (a second literal could drift from the first)."""
    from pathlib import Path

    import memos.scheduler
    from memos.scheduler.service import POLICY_JOB

    package = Path(memos.scheduler.__file__).parent
    spelled = sorted(
        p.relative_to(package.parent.parent).as_posix()
        for folder in (package, package.parent.parent / "policies")
        for p in folder.rglob("*.py")
        if '"policy.apply"' in p.read_text(encoding="utf-8")
    )
    assert spelled == ["memos/scheduler/service.py"]
    mos, cube = alice
    assert POLICY_JOB in mos.scheduler.handlers
    (job,) = mos.policies.enqueue(cube_ids=[cube])
    assert job.kind == POLICY_JOB
    assert mos.scheduler.run_worker(until_idle=True) == 1 and mos.scheduler.get(job.id).state == "done"


# ------------------------------------------------------------------ a deleted cube's artifacts


def _blob_files(mos: Any) -> list[Any]:
    root = mos.settings.home / "blobs"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _cube_rows(mos: Any, cube: str) -> tuple[list[Any], list[Any]]:
    """The audit rows and the blob rows left of ``cube``."""
    from sqlalchemy import select

    from memos.storage.relational.models import AuditRow, BlobRow

    with mos.store.read_session() as s:
        audit = list(s.scalars(select(AuditRow).where(AuditRow.cube_id == cube)))
        return audit, list(s.scalars(select(BlobRow).where(BlobRow.cube_id == cube)))


@pytest.mark.slow
def test_deleting_a_cube_retires_its_kv_prefixes(alice: Any, hf_runtime: Any) -> None:
    """Each live prefix is published as ``artifact_retired`` (one a purge retired already is
    not retired twice), listed in the surviving ``cube_delete`` audit row, and its blob
    file is gone."""
    from memos.events import Event, EventKind

    mos, cube = alice
    kept, purged = (
        mos.add(text=t, type="fact", user_id="alice", cube_id=cube, extract=False).memories[0].id
        for t in ("Alice's sister Mira lives in Tromso", "Alice has a beagle named Pretzel")
    )
    prefix = mos.activation.compile(cube, user_id="alice", runtime=hf_runtime, memory_ids=[kept], name="one")
    other = mos.activation.compile(cube, user_id="alice", runtime=hf_runtime, memory_ids=[purged], name="two")
    mos.purge(purged, user_id="alice")  # "two" is retired now, once
    assert not mos.activation.blob_path(other.id).exists()
    assert mos.activation.blob_path(prefix.id).exists() and _blob_files(mos)
    seen: list[Event] = []
    mos.events.subscribe(seen.append, [EventKind.artifact_retired, EventKind.cube_deleted])

    mos.delete_cube(cube, "alice")
    (deleted, retired) = seen
    assert deleted.kind == EventKind.cube_deleted and retired.kind == EventKind.artifact_retired
    assert retired.details == {"kind": "kv_prefix", "id": prefix.id, "name": "one"}  # not "two" again
    assert (retired.actor, retired.cube_id, retired.reason) == ("alice", cube, "its cube was deleted")
    assert retired.memory_ids == (kept,)
    assert _blob_files(mos) == []  # no blob file left behind
    (row,), blob_rows = _cube_rows(mos, cube)
    assert blob_rows == [] and row.action == "cube_delete"
    assert row.details == {"memories": 1, "artifacts": [retired.details]}


def test_deleting_a_cube_retires_its_adapters(alice: Any) -> None:
    """An adapter row as consolidation stores it (a blob file and its gguf export, the
    manifest's fields the retirement reads; training one takes minutes): deleting the cube
    publishes its ``artifact_retired`` and deletes both files; a retired one is not retired
    twice."""
    from datetime import UTC, datetime

    from memos.blobs import BlobStore
    from memos.events import Event, EventKind
    from memos.parametric.lora import KIND
    from memos.storage.relational.models import BlobRow

    mos, cube = alice
    kept = mos.add(text="Alice is vegetarian", type="fact", user_id="alice", cube_id=cube, extract=False)
    mid = kept.memories[0].id
    blobs = BlobStore(mos.settings.home)
    rows = []
    for name, state in (("default", "active"), ("old", "retired")):
        sha = blobs.write(f"adapter {name}".encode())
        gguf = blobs.write(f"gguf {name}".encode(), ".gguf")
        manifest = {"name": name, "state": state, "memories": [{"id": mid, "version": 1}],
                    "gguf": {"sha256": gguf}}  # fmt: skip
        rows.append(BlobRow(sha256=sha, cube_id=cube, kind=KIND, size=9, created_at=datetime.now(UTC),
                            manifest=manifest))  # fmt: skip
    with mos.store.session() as s:
        s.add_all(rows)
    assert len(_blob_files(mos)) == 4
    seen: list[Event] = []
    mos.events.subscribe(seen.append, [EventKind.artifact_retired])

    mos.delete_cube(cube, "alice")
    (retired,) = seen
    assert retired.details == {"kind": "lora", "id": rows[0].sha256, "name": "default"}
    assert (retired.actor, retired.reason, retired.memory_ids) == ("alice", "its cube was deleted", (mid,))
    assert _blob_files(mos) == []
    (row,), blob_rows = _cube_rows(mos, cube)
    assert blob_rows == [] and row.details["artifacts"] == [retired.details]
