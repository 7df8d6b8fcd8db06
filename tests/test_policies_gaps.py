"""Issue 21's gaps in the policies: capacity by tokens, dedup confirmed by vectors, a
deleted cube retiring its KV prefixes and adapters, one spelling of the ``policy.apply``
job kind. Deterministic: every home runs on an injected clock that moves only when the
test says; the vectors are the bundled embedder's."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from memos.errors import InvalidInput
from memos.policies.base import CubeView, MemoryView
from memos.policies.capacity import CapacityPolicy, CapacitySettings

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
