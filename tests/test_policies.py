"""The scheduler's policies (issue 21): heat, ttl, decay, capacity; plan = apply; a failing
policy; settings (config < cube override, validation); the archived and expired states
through search, list, restore and export/import. Deterministic: every home runs on an
injected clock that moves only when the test says."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from memos.errors import ConfigError, InvalidInput, InvalidState, PermissionDenied
from memos.policies.base import Action, Archive, CubeView, MemoryView, Policy
from memos.policies.heat import HeatPolicy, HeatSettings

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def states(mos: Any, cube: str, user: str = "alice") -> dict[str, str]:
    page = mos.list_memories(user_id=user, cube_id=cube, states=None, limit=1000)
    return {m.id: str(m.state) for m in page.items}


def found(mos: Any, query: str, user: str = "alice", **kw: Any) -> list[str]:
    return [h.memory.id for h in mos.search(query, user_id=user, **kw)]


def actions(report: Any, policy: str | None = None) -> list[tuple[str, str]]:
    """(verb, memory id) of every action in a report, of one policy if named."""
    return [
        (a.verb, a.memory_id)
        for cube in report.cubes
        for o in cube.outcomes
        if policy is None or o.policy == policy
        for a in o.actions
    ]


def _outcome(report: Any, policy: str) -> Any:
    return next(o for o in report.cubes[0].outcomes if o.policy == policy)


def add(mos: Any, cube: str, text: str, **kw: Any) -> str:
    """One memory, an episode unless ``type`` says otherwise, with nothing derived from it."""
    kw.setdefault("type", "episode")
    return str(mos.add(text=text, user_id="alice", cube_id=cube, extract=False, **kw).memories[0].id)


# ------------------------------------------------------------------ defaults


def test_defaults_retire_nothing_a_user_adds_even_years_later(alice: Any) -> None:
    mos, cube = alice
    add(mos, cube, "Alice's passport number is in the drawer", type="episode")
    add(mos, cube, "Bob likes green tea", type="preference", importance=0.0)
    mos.add([{"role": "user", "content": "I live in Berlin."}], user_id="alice", cube_id=cube)
    mos.clock.advance(days=3650)
    report = mos.policies.plan()
    assert {"heat", "ttl", "decay", "capacity"} <= {o.policy for o in report.cubes[0].outcomes}
    assert actions(report) == [] and all(o.error is None for o in report.cubes[0].outcomes)
    before = states(mos, cube)
    mos.policies.apply()
    assert states(mos, cube) == before and set(before.values()) == {"active"}


# ------------------------------------------------------------------ heat


def _view(*memories: MemoryView) -> CubeView:
    return CubeView("c", "alice", memories)


def _mem(mid: str, **kw: Any) -> MemoryView:
    values: dict[str, Any] = {
        "id": mid,
        "type": "episode",
        "state": "active",
        "importance": 0.5,
        "tags": (),
        "metadata": {},
        "recorded_at": T0,
        "updated_at": T0,
        "retired_at": None,
        "hits": 0,
        "last_accessed": None,
        "session_id": None,
        "source_ids": (),
        "chars": 10,
    }
    return MemoryView(**(values | kw))


def test_heat_formula_frequency_recency_importance_and_type() -> None:
    now = T0 + timedelta(days=30)
    view = _view(
        _mem("new", recorded_at=now),
        _mem("idle", importance=0.0),  # one half-life idle
        _mem(
            "used",
            hits=9,
            recorded_at=T0 - timedelta(days=90),
            last_accessed=T0 - timedelta(days=30),
            importance=0.0,
        ),
        _mem("fact", type="fact", importance=0.0),
        _mem("vip", importance=1.0, recorded_at=T0 - timedelta(days=3650)),
    )
    assert HeatSettings().half_life == timedelta(days=180)  # the default (BENCHMARKS.md, lifecycle)
    heat = HeatPolicy().scores(view, now, HeatSettings(half_life="30d"))
    assert heat["new"] == pytest.approx(1.0 + 0.25)  # fresh: 1 × 1 × 1 + 0.5 × 0.5
    assert heat["idle"] == pytest.approx(0.5)
    assert heat["used"] == pytest.approx((1 + math.log(10)) * 0.25)  # two half-lives since its last hit
    assert heat["fact"] == pytest.approx(1.5 * 0.5)
    assert heat["vip"] == pytest.approx(0.5, abs=1e-6)  # cold for years, kept warm by importance
    assert HeatPolicy().decide(view, [], now, HeatSettings()) == []


def test_a_search_warms_what_it_returns(alice: Any) -> None:
    mos, cube = alice
    warm = add(mos, cube, "the boiler code is 4711")
    cold = add(mos, cube, "the garden gate squeaks")
    mos.clock.advance(days=400)  # unused for over a year: below 0.5 with the 180-day half-life
    assert warm in found(mos, "boiler code", top_k=1)
    mos.policies.set(cube, "decay.after", "30d", user_id="alice")
    report = mos.policies.plan()
    assert actions(report, "decay") == [("archive", cold)]


# ------------------------------------------------------------------ ttl


def test_ttl_expires_by_type_tag_and_metadata_then_purges_after_grace(alice: Any) -> None:
    mos, cube = alice
    episode = add(mos, cube, "we talked about the weather", type="episode")
    tagged = add(mos, cube, "one-time code 93817", type="fact", tags=["otp"])
    meta = add(mos, cube, "parking at level 3", type="fact", metadata={"ephemeral": True})
    kept = add(mos, cube, "Alice is allergic to peanuts", type="fact")
    for key, value in [
        ("ttl.types.episode", "30d"),
        ("ttl.tags.otp", "1h"),
        ("ttl.metadata.ephemeral", "2d"),
        ("ttl.grace", "7d"),
    ]:
        mos.policies.set(cube, key, value, user_id="alice")
    mos.clock.advance(hours=2)
    assert actions(mos.policies.apply()) == [("expire", tagged)]
    assert tagged not in found(mos, "one-time code") and tagged not in found(
        mos, "one-time code", include_archived=True
    )
    mos.clock.advance(days=3)
    assert actions(mos.policies.apply()) == [("expire", meta)]
    # restored within its grace, an expired memory is back (its age is unchanged: the ttl
    # would expire it again, so its owner drops that rule for the cube)
    mos.restore(meta, user_id="alice")
    mos.policies.unset(cube, "ttl.metadata", user_id="alice")
    mos.clock.advance(days=27)
    report = mos.policies.apply()
    assert sorted(actions(report)) == sorted([("expire", episode), ("purge", tagged)])
    reason = next(a.reason for a in _outcome(report, "ttl").actions if a.memory_id == episode)
    assert "type episode" in reason and "30d" in reason
    assert states(mos, cube) == {episode: "expired", meta: "active", kept: "active"}
    # the audit log says who decided and why
    events = mos.history(episode, user_id="alice").events
    assert (events[-1].action, events[-1].actor) == ("expire", "policy:ttl")
    assert "ttl of type episode" in (events[-1].reason or "")
    mos.clock.advance(days=6)
    assert actions(mos.policies.apply()) == []  # within the grace
    mos.clock.advance(days=2)
    assert actions(mos.policies.apply()) == [("purge", episode)]
    assert states(mos, cube) == {meta: "active", kept: "active"}
    assert _audit_rows(mos, cube, "purge")[-1].actor == "policy:ttl"


# ------------------------------------------------------------------ decay


def test_decay_archives_what_stays_cold_and_spares_the_important(alice: Any) -> None:
    mos, cube = alice
    cold = add(mos, cube, "the old wifi password was hunter2")
    vip = add(mos, cube, "Alice's blood type is AB negative", importance=1.0)
    mos.policies.set_many(cube, {"decay.after": "45d", "heat.half_life": "30d"}, user_id="alice")
    mos.clock.advance(days=40)
    fresh_later = add(mos, cube, "the new wifi password is correcthorse")
    assert actions(mos.policies.plan(), "decay") == []  # idle 40 days < 45
    mos.clock.advance(days=30)
    report = mos.policies.apply()
    assert actions(report, "decay") == [("archive", cold)]
    assert states(mos, cube) == {cold: "archived", vip: "active", fresh_later: "active"}
    assert cold not in found(mos, "old wifi password")
    assert cold in found(mos, "old wifi password", include_archived=True)
    assert mos.history(cold, user_id="alice").events[-1].actor == "policy:decay"
    # turned off for the cube: nothing more is archived, however cold
    mos.policies.set(cube, "decay.enabled", False, user_id="alice")
    mos.clock.advance(days=3650)
    report = mos.policies.plan()
    assert actions(report) == [] and not _outcome(report, "decay").enabled


# ------------------------------------------------------------------ capacity


def test_capacity_archives_covered_episodes_first_then_the_coldest(alice: Any) -> None:
    mos, cube = alice
    result = mos.add(
        [{"role": "user", "name": "Alice", "content": "I live in Berlin."}],
        user_id="alice",
        cube_id=cube,
        session_id="s1",
    )
    covered = result.memories[0].id
    assert result.derived and covered in result.derived[0].provenance.source_ids
    mos.clock.advance(days=1)
    plain = [add(mos, cube, f"note number {i} about the garden") for i in range(3)]
    mos.clock.advance(days=1)
    assert found(mos, "note number 0 garden", top_k=1) == [plain[0]]  # a hit: warmer than its siblings
    active = len([s for s in states(mos, cube).values() if s == "active"])  # 1 episode, its fact(s), 3 notes
    mos.policies.set(cube, "capacity.max_active", active - 2, user_id="alice")
    report = mos.policies.plan()
    assert actions(report, "capacity") == [("archive", covered), ("archive", plain[1])]
    assert "covered by a derived memory" in _outcome(report, "capacity").actions[0].reason
    mos.policies.apply()
    assert len([s for s in states(mos, cube).values() if s == "active"]) == active - 2
    assert actions(mos.policies.plan()) == []  # at the cap: nothing more


def test_capacity_counts_what_earlier_policies_already_archived(alice: Any) -> None:
    mos, cube = alice
    old = add(mos, cube, "an old note")
    mos.clock.advance(days=100)
    new = [add(mos, cube, f"a new note {i}") for i in range(2)]
    mos.policies.set(cube, "decay.after", "90d", user_id="alice")
    mos.policies.set(cube, "capacity.max_active", 2, user_id="alice")
    report = mos.policies.plan()
    assert actions(report) == [("archive", old)]  # decay took it; capacity sees 2 active
    assert all(m in states(mos, cube) for m in new)


# ------------------------------------------------------------------ the framework


def test_plan_is_what_apply_does(alice: Any) -> None:
    mos, cube = alice
    ids = [add(mos, cube, f"memory {i}", tags=["tmp"] if i % 2 else []) for i in range(6)]
    mos.policies.set(cube, "ttl.tags.tmp", "10d", user_id="alice")
    mos.policies.set(cube, "capacity.max_active", 2, user_id="alice")
    mos.clock.advance(days=11)
    plan = mos.policies.plan()
    before = states(mos, cube)
    applied = mos.policies.apply()
    strip = lambda r: [c["policies"] for c in r.as_dict()["cubes"]]  # noqa: E731
    assert strip(plan) == strip(applied) and plan.counts() == applied.counts()
    assert plan.counts() == {"failed": 0, "expire": 3, "archive": 1}
    after = states(mos, cube)
    for verb, mid in actions(plan):
        assert before[mid] == "active" and after[mid] == {"expire": "expired", "archive": "archived"}[verb]
    assert sum(1 for m in ids if after[m] == "active") == 2
    assert actions(mos.policies.apply()) == []  # applied twice: nothing more


class Exploding(Policy):
    name = "exploding"
    order = 5

    def decide(self, view: CubeView, events: Any, now: datetime, settings: Any) -> list[Action]:
        raise RuntimeError("the plugin broke")


class Sweeper(Policy):
    """Archives whatever mentions "sweep"; also asks for impossible things."""

    name = "sweeper"

    def decide(self, view: CubeView, events: Any, now: datetime, settings: Any) -> list[Action]:
        seen = {e.action for e in events}
        out: list[Action] = [Archive(m.id, f"sweep ({len(seen)} kinds of events)") for m in view.active]
        return [*out, Archive("no-such-memory", "gone")]


def test_a_failing_policy_is_recorded_and_the_others_run(alice: Any) -> None:
    mos, cube = alice
    expiring = add(mos, cube, "a temporary thing", tags=["tmp"])
    mos.policies.set(cube, "ttl.tags.tmp", "1d", user_id="alice")
    mos.policies.register(Exploding)
    mos.clock.advance(days=2)
    report = mos.policies.plan()
    by_name = {o.policy: o for o in report.cubes[0].outcomes}
    assert [n for n in by_name if n in ("heat", "exploding", "ttl", "decay", "capacity")] == ["heat", "exploding", "ttl", "decay", "capacity"]  # fmt: skip
    assert by_name["exploding"].error == "RuntimeError: the plugin broke"
    assert actions(report) == [("expire", expiring)]
    applied = mos.policies.apply()
    assert applied.counts() == {"failed": 1, "expire": 1}
    assert states(mos, cube)[expiring] == "expired"
    rows = _audit_rows(mos, cube, "policy_failed")
    assert len(rows) == 1 and rows[0].actor == "policy:exploding"
    assert "the plugin broke" in rows[0].details["error"]


def test_installed_policies_come_from_entry_points_and_a_broken_one_is_reported(
    make_mos: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import EntryPoint

    from memos import registry

    group = "memos.policies"
    installed = dict(registry._names(group))
    extra = {
        "sweeper": EntryPoint("sweeper", f"{__name__}:Sweeper", group),
        "broken": EntryPoint("broken", "memos_no_such_plugin.policy:Nothing", group),
    }
    real = registry._names
    monkeypatch.setattr(registry, "_names", lambda g: {**installed, **extra} if g == group else real(g))
    mos = make_mos()  # reads the (third parties') entry points as it opens
    mos.add_user("alice")
    cube = mos.create_cube("alice", "personal").id
    mid = add(mos, cube, "sweep this")
    report = mos.policies.apply()
    by_name = {o.policy: o for o in report.cubes[0].outcomes}
    assert by_name["broken"].error is not None and "memos_no_such_plugin" in by_name["broken"].error
    assert [(a.verb, a.memory_id) for a in by_name["sweeper"].actions] == [("archive", mid)]
    assert states(mos, cube) == {mid: "archived"}
    assert _audit_rows(mos, cube, "policy_failed")[0].actor == "policy:broken"
    assert mos.policies.settings()["sweeper"] == {"enabled": True}


def _audit_rows(mos: Any, cube: str, action: str) -> list[Any]:
    from sqlalchemy import select

    from memos.plaintext.convert import event_from_row
    from memos.storage.relational.models import AuditRow

    with mos.store.read_session() as s:
        q = select(AuditRow).where(AuditRow.cube_id == cube, AuditRow.action == action).order_by(AuditRow.id)
        return [event_from_row(r) for r in s.scalars(q)]


def test_a_policys_impossible_actions_are_skipped_with_why(alice: Any) -> None:
    mos, cube = alice
    mid = add(mos, cube, "sweep me")
    mos.policies.register(Sweeper())
    report = mos.policies.apply()
    sweeper = next(o for o in report.cubes[0].outcomes if o.policy == "sweeper")
    assert [(a.verb, a.memory_id) for a in sweeper.actions] == [("archive", mid)]
    assert [(a.memory_id, why) for a, why in sweeper.skipped] == [
        ("no-such-memory", "no such memory in this cube (or already purged)")
    ]
    assert "kinds of events" in sweeper.actions[0].reason  # it was shown the cube's audit events
    assert states(mos, cube) == {mid: "archived"}
    # on the next run the memory is archived already: skipped, saying so
    again = next(o for o in mos.policies.plan().cubes[0].outcomes if o.policy == "sweeper")
    assert again.actions == []


def test_policy_apply_is_a_job_a_worker_runs(alice: Any) -> None:
    mos, cube = alice
    mid = add(mos, cube, "short-lived", tags=["tmp"])
    mos.policies.set(cube, "ttl.tags.tmp", "1h", user_id="alice")
    mos.clock.advance(hours=2)
    jobs = mos.policies.enqueue(user_id="alice")
    assert [(j.kind, j.cube_id) for j in jobs] == [("policy.apply", cube)]
    assert mos.policies.enqueue(user_id="alice")[0].id == jobs[0].id  # keyed by the cube
    assert mos.scheduler.run_worker(until_idle=True) == 1
    job = mos.scheduler.get(jobs[0].id)
    assert job.state == "done" and job.result["counts"]["expire"] == 1
    assert states(mos, cube) == {mid: "expired"}


# ------------------------------------------------------------------ settings


def test_cube_override_beats_the_config_default(make_mos: Any, tmp_path: Path) -> None:
    mos = make_mos(policies={"ttl": {"types": {"fact": "100d"}, "grace": "1d"}})
    mos.add_user("alice")
    a = mos.create_cube("alice", "a").id
    b = mos.create_cube("alice", "b").id
    in_a = add(mos, a, "fact in a", type="fact")
    in_b = add(mos, b, "fact in b", type="fact")
    mos.policies.set(a, "ttl.types.fact", "10d", user_id="alice")
    assert mos.policies.settings(a, user_id="alice")["ttl"]["types"] == {"fact": "10d"}
    assert mos.policies.settings(b, user_id="alice")["ttl"]["types"] == {"fact": "100d"}
    assert mos.policies.settings(a, user_id="alice")["ttl"]["grace"] == "1d"  # merged key by key
    assert mos.policies.overrides(a, user_id="alice") == {"ttl": {"types": {"fact": "10d"}}}
    mos.clock.advance(days=20)
    assert actions(mos.policies.plan()) == [("expire", in_a)]
    mos.clock.advance(days=100)
    assert ("expire", in_b) in actions(mos.policies.plan())


def test_bad_settings_name_the_field_and_the_policy(alice: Any) -> None:
    mos, cube = alice
    with pytest.raises(InvalidInput, match=r"'grace' of the ttl policy.*30d"):
        mos.policies.set(cube, "ttl.grace", "soon", user_id="alice")
    with pytest.raises(InvalidInput, match=r"'bogus' is not a setting of the decay policy"):
        mos.policies.set(cube, "decay.bogus", 1, user_id="alice")
    with pytest.raises(InvalidInput, match=r"max_active' of the capacity policy"):
        mos.policies.set(cube, "capacity.max_active", -1, user_id="alice")
    with pytest.raises(InvalidInput, match=r"no policy named 'nope'; known: heat, ttl, .*decay, .*capacity"):
        mos.policies.set(cube, "nope.x", 1, user_id="alice")
    with pytest.raises(InvalidInput, match="types.sticky"):
        mos.policies.set(cube, "ttl.types.sticky", "1d", user_id="alice")
    assert mos.policies.overrides(cube, user_id="alice") == {}  # nothing half-written
    mos.add_user("bob")
    mos.share_cube(cube, "alice", "bob", "writer")
    with pytest.raises(PermissionDenied, match="owner"):
        mos.policies.set(cube, "decay.after", "1d", user_id="bob")


def test_bad_config_names_the_field_and_the_policy(make_mos: Any) -> None:
    with pytest.raises(ConfigError, match=r"'after' of the decay policy"):
        make_mos(policies={"decay": {"after": "whenever"}})
    with pytest.raises(ConfigError, match=r"'maximum' is not a setting of the capacity policy"):
        make_mos(policies={"capacity": {"maximum": 3}})


# ------------------------------------------------------------------ the states


def test_archived_and_expired_through_search_list_and_restore(alice: Any) -> None:
    mos, cube = alice
    arch = add(mos, cube, "the lighthouse keeper retired in 1990")
    exp = add(mos, cube, "the lighthouse lamp was replaced last spring")
    live = add(mos, cube, "the lighthouse is painted red and white")
    mos.archive(arch, user_id="alice", reason="cold")
    mos.expire(exp, user_id="alice", reason="too old")
    assert set(found(mos, "lighthouse")) == {live}
    assert set(found(mos, "lighthouse", include_archived=True)) == {live, arch}
    page = mos.list_memories(user_id="alice", cube_id=cube)
    assert [m.id for m in page.items] == [live]
    assert {m.id for m in mos.list_memories(user_id="alice", cube_id=cube, states=["archived"]).items} == {
        arch
    }
    assert {m.id for m in mos.list_memories(user_id="alice", cube_id=cube, states=["expired"]).items} == {exp}
    assert mos.get(exp, user_id="alice").retired_at is not None
    # their index points stay: nothing missing, nothing extra
    report = mos.check_index()
    assert report["missing"] == 0 and report["extra"] == 0 and report["index_points"] == 3
    with pytest.raises(InvalidState, match="it is expired"):
        mos.archive(exp, user_id="alice")
    history = mos.history(arch, user_id="alice")
    assert [(e.action, e.reason, e.details.get("to")) for e in history.events][-1] == (
        "archive",
        "cold",
        "archived",
    )
    for mid in (arch, exp):
        assert mos.restore(mid, user_id="alice").state == "active"
    assert set(found(mos, "lighthouse")) == {live, arch, exp}
    mos.delete(arch, user_id="alice")
    assert arch not in found(mos, "lighthouse", include_archived=True)


def test_export_import_keep_the_states_and_the_overrides(alice: Any, make_mos: Any, tmp_path: Path) -> None:
    mos, cube = alice
    arch = add(mos, cube, "an archived note")
    exp = add(mos, cube, "an expired note")
    add(mos, cube, "a live note")
    mos.archive(arch, user_id="alice")
    mos.expire(exp, user_id="alice")
    mos.policies.set(cube, "ttl.types.episode", "30d", user_id="alice")
    path = mos.export_cube(cube, tmp_path / "c.memcube", user_id="alice")
    # another home (on PostgreSQL the same database: a copy, with new ids)
    other = make_mos(home=tmp_path / "other")
    other.add_user("carol")
    new = other.import_cube(path, user_id="carol", copy=True)
    page = other.list_memories(user_id="carol", cube_id=new.id, states=None)
    by_text = {m.text: (m.id, str(m.state)) for m in page.items}
    assert {t: st for t, (_, st) in by_text.items()} == {
        "an archived note": "archived",
        "an expired note": "expired",
        "a live note": "active",
    }
    hits = set(found(other, "note", user="carol", cube_ids=[new.id], include_archived=True))
    assert hits == {by_text["an archived note"][0], by_text["a live note"][0]}
    assert other.policies.overrides(new.id, user_id="carol") == {"ttl": {"types": {"episode": "30d"}}}


def test_async_archive_and_expire(tmp_path: Path, embedder: Any) -> None:
    import asyncio

    from memos.aio import AsyncMemOS

    async def scenario() -> dict[str, str]:
        async with AsyncMemOS(home=tmp_path / "async", embedder=embedder) as amos:
            await amos.add_user("alice")
            cube = (await amos.create_cube("alice", "personal")).id
            a, b = [
                (await amos.add(text=t, user_id="alice", cube_id=cube, extract=False)).memories[0].id
                for t in ("first note", "second note")
            ]
            archived = await amos.archive(a, user_id="alice")
            expired = await amos.expire(b, user_id="alice")
            hits = await amos.search("note", user_id="alice", include_archived=True)
            return {
                "a": str(archived.state),
                "b": str(expired.state),
                "hits": ",".join(h.memory.id for h in hits),
            }

    got = asyncio.run(scenario())
    assert got["a"] == "archived" and got["b"] == "expired" and len(got["hits"].split(",")) == 1
