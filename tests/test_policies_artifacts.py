"""The policies over derived memory (issue 21): activation promotion, parametric
consolidation, erasure propagation. Their decisions on small views (pure, no model); the
kernel's checks, audit and failures around their actions; and, marked slow, one run per
policy on the bundled transformers model — a user who never compiles gets a KV prefix
that chat starts from, consolidation and retrain run as jobs, a purge queues the retrain
in its own transaction. Every home runs on an injected clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from memos.policies.activation import ActivationPolicy, ActivationSettings
from memos.policies.base import (
    ArtifactView,
    CompileActivation,
    ConsolidateParametric,
    CubeView,
    MemoryView,
    Policy,
    RetireArtifact,
    RetrainParametric,
)
from memos.policies.erasure import ErasurePolicy
from memos.policies.parametric import ParametricPolicy, ParametricSettings
from memos.runtime import GenerationParams

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=2)


def _mem(mid: str, **kw: Any) -> MemoryView:
    values: dict[str, Any] = {
        "id": mid, "type": "fact", "state": "active", "importance": 0.5, "tags": (), "metadata": {},
        "recorded_at": T0, "updated_at": T0, "retired_at": None, "hits": 5, "last_accessed": T0,
        "session_id": None, "source_ids": (), "chars": 40, "heat": 1.0,
    }  # fmt: skip
    values.update(kw)
    return MemoryView(**values)


def _prefix(ids: tuple[str, ...], **kw: Any) -> ArtifactView:
    values: dict[str, Any] = {
        "kind": "kv_prefix", "id": "k" * 64, "name": "auto", "state": "ready", "memory_ids": ids,
        "created_at": T0, "runtime": "transformers", "model": "smollm2-135m-instruct",
    }  # fmt: skip
    values.update(kw)
    return ArtifactView(**values)


def _view(*memories: MemoryView, artifacts: tuple[ArtifactView, ...] = ()) -> CubeView:
    return CubeView("c", "alice", memories, artifacts, "transformers")


def _activation(view: CubeView, now: datetime = NOW, **settings: Any) -> list[Any]:
    return ActivationPolicy().decide(view, [], now, ActivationSettings(**settings))


# ------------------------------------------------------------------ activation (pure)


def test_activation_promotes_the_hottest_stable_used_memories_within_the_budget() -> None:
    view = _view(
        _mem("warm", heat=2.0),
        _mem("hot", heat=3.0, type="preference"),
        _mem("fresh", heat=9.0, updated_at=NOW - timedelta(minutes=5)),  # changed 5 min ago: not stable
        _mem("rare", heat=9.0, hits=1),  # returned once: not used enough
        _mem("doc", heat=9.0, type="chunk"),  # not a promoted type (documents stay retrieved)
        _mem("said", heat=2.5, type="episode"),  # a turn searches keep returning: promoted
        _mem("gone", heat=9.0, state="archived"),
        _mem("big", heat=1.5, chars=4000),  # ~1000 tokens: over the budget, and everything after it
        _mem("cool", heat=1.0),
    )
    (a,) = _activation(view)
    assert isinstance(a, CompileActivation)
    assert a.memory_ids == ("hot", "said", "warm") and a.name == "auto" and a.token_budget == 1024
    assert "no 'auto' prefix for transformers" in a.reason
    # a bigger budget takes them all, hottest first; an empty hot set asks for nothing
    (b,) = _activation(view, token_budget=4096)
    assert b.memory_ids == ("hot", "said", "warm", "big", "cool")
    assert _activation(view, min_hits=50) == []
    # no runtime configured and none set: nothing to compile for
    assert (
        ActivationPolicy().decide(CubeView("c", "alice", view.memories), [], NOW, ActivationSettings()) == []
    )


def test_activation_recompiles_on_drift_or_invalidation_debounced() -> None:
    mems = [_mem(f"m{i}", heat=10.0 - i) for i in range(5)]
    ids = tuple(m.id for m in mems)
    # the prefix holds the hot set: nothing to do
    assert _activation(_view(*mems, artifacts=(_prefix(ids),))) == []
    # one of five replaced: Jaccard 4/6 < 0.8 → recompile; a threshold of 0.6 tolerates it
    drifted = (_prefix((*ids[:4], "old")),)
    (a,) = _activation(_view(*mems, artifacts=drifted))
    assert a.memory_ids == ids and "Jaccard 0.67 < 0.8" in a.reason
    assert _activation(_view(*mems, artifacts=drifted), min_jaccard=0.6) == []
    # a member changed since the compile (or the prefix went stale): recompile
    for bad in (_prefix(ids, outdated=True), _prefix(ids, state="stale"), _prefix(ids, state="purged")):
        (b,) = _activation(_view(*mems, artifacts=(bad,)))
        assert "no longer valid" in b.reason
    # debounced: never within min_interval of the last compile
    recent = _prefix(ids, outdated=True, created_at=NOW - timedelta(minutes=5))
    assert _activation(_view(*mems, artifacts=(recent,))) == []
    assert len(_activation(_view(*mems, artifacts=(recent,)), min_interval="2m")) == 1
    # a prefix of another runtime, or of another name, is not the policy's
    other = (_prefix(ids, runtime="llama_cpp"), _prefix(ids, name="default"))
    assert len(_activation(_view(*mems, artifacts=other))) == 1


# ------------------------------------------------------------------ parametric (pure)


def _parametric(view: CubeView, now: datetime = NOW, **settings: Any) -> list[Any]:
    cfg = ParametricSettings(**{"enabled": True, "min_new": 3, "idle_for": None, **settings})
    return ParametricPolicy().decide(view, [], now, cfg)


def test_parametric_consolidates_enough_fresh_facts_in_its_window_only() -> None:
    assert ParametricSettings().enabled is False  # off by default: training takes minutes
    mems = [_mem(f"f{i}", heat=5.0 - i) for i in range(4)]
    adapter = _prefix(("f0",), kind="lora", id="a" * 64, state="active")
    view = _view(*mems, _mem("new", hits=0), artifacts=(adapter,))
    (a,) = _parametric(view)
    # the live adapter's memories first (the new adapter keeps what it knew), then the fresh ones
    assert isinstance(a, ConsolidateParametric) and a.memory_ids == ("f0", "f1", "f2", "f3")
    assert "3 stable memories" in a.reason
    # unattended trainings on a few facts anchor harder to the base model; train overrides it
    assert dict(a.train) == {"replay_weight": 4.0}
    (b,) = _parametric(view, train={"epochs": 1, "replay_weight": 2.0})
    assert dict(b.train) == {"epochs": 1, "replay_weight": 2.0}
    assert _parametric(view, min_new=4) == []  # f0 is in an adapter already: 3 < 4
    # the window: 12:00 UTC is outside 01:00-05:00, inside 11:00-13:00 and 23:00-13:00
    assert _parametric(view, window="01:00-05:00") == []
    assert len(_parametric(view, window="11:00-13:00")) == len(_parametric(view, window="23:00-13:00")) == 1
    # idle: the cube was last used at T0; not idle for three days yet
    assert _parametric(view, idle_for="3d") == [] and len(_parametric(view, idle_for="1d")) == 1
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        ParametricSettings(window="nightly")


def test_parametric_queues_pending_retrains() -> None:
    stale = _prefix(("f0",), kind="lora", id="b" * 64, state="stale", retrain=True)
    (a,) = _parametric(_view(_mem("f0"), artifacts=(stale,)))
    assert isinstance(a, RetrainParametric) and a.adapter_id == "b" * 64


# ------------------------------------------------------------------ erasure (pure)


def test_erasure_retires_what_was_built_from_a_purged_memory() -> None:
    kept = _mem("kept")
    built = (
        _prefix(("kept", "m-gone")),
        _prefix(("kept",), kind="lora", id="c" * 64, state="active"),
        _prefix(("m-gone",), kind="lora", id="d" * 64, state="retired"),  # retired by the purge
    )
    (a,) = ErasurePolicy().decide(_view(kept, artifacts=built), [], NOW, ErasurePolicy.Settings())
    assert isinstance(a, RetireArtifact) and (a.kind, a.artifact_id, a.memory_ids) == (
        "kv_prefix",
        "k" * 64,
        ("m-gone",),
    )
    assert "m-gone" not in str(a.as_dict())  # a plan does not repeat the purged ids


# ------------------------------------------------------------------ the kernel (no model)


def _warm(mos: Any, cube: str, texts: list[str], *, times: int = 3) -> list[str]:
    ids = [
        mos.add(text=t, type="fact", user_id="alice", cube_id=cube, extract=False).memories[0].id
        for t in texts
    ]
    for _ in range(times):
        mos.search(" ".join(texts), user_id="alice", cube_ids=[cube], top_k=len(texts))
    return ids


def test_plan_lists_the_compile_and_apply_records_a_failing_one(alice: Any) -> None:
    mos, cube = alice
    ids = _warm(mos, cube, ["Alice's sister Mira lives in Tromso", "Alice has a beagle named Pretzel"])
    assert [o for o in mos.policies.plan().cubes[0].outcomes if o.policy == "activation"][0].actions == []
    mos.clock.advance(hours=2)  # stable now
    plan = mos.policies.plan()
    (a,) = [a for o in plan.cubes[0].outcomes if o.policy == "activation" for a in o.actions]
    assert a.verb == "compile_activation" and set(a.memory_ids) == set(ids)
    shown = json.loads(json.dumps(plan.as_dict()))  # what `memos policy plan` prints, with the keys it reads
    (listed,) = [
        x for p in shown["cubes"][0]["policies"] if p["policy"] == "activation" for x in p["actions"]
    ]
    assert (
        listed["memory_id"] == "" and listed["memory_ids"] == list(a.memory_ids) and listed["name"] == "auto"
    )
    # a runtime without KV prefixes (said by its class): the compile is skipped, saying why
    mos.policies.set(cube, "activation.runtime", "openai", user_id="alice")
    (o,) = [o for o in mos.policies.plan().cubes[0].outcomes if o.policy == "activation"]
    assert o.actions == [] and "cannot hold activation memory" in o.skipped[0][1]
    # a runtime that cannot be loaded: the action fails, is reported, and the rest is applied
    mos.policies.set(cube, "activation.runtime", "no-such-runtime", user_id="alice")
    report = mos.policies.apply()
    (o,) = [o for o in report.cubes[0].outcomes if o.policy == "activation"]
    assert [f[0].verb for f in o.failed] == ["compile_activation"] and report.counts()["failed"] == 1
    # an archived memory leaves the hot set; a (third-party) policy's compile naming it is
    # skipped by the kernel, saying which
    mos.archive(ids[0], user_id="alice")
    (o,) = [o for o in mos.policies.plan().cubes[0].outcomes if o.policy == "activation"]
    assert o.actions[0].memory_ids == (ids[1],)

    class Eager(Policy):
        name = "eager"

        def decide(self, view: CubeView, events: Any, now: datetime, settings: Any) -> list[Any]:
            return [CompileActivation(reason="everything", memory_ids=tuple(ids), name="eager")]

    mos.policies.register(Eager)
    (o,) = [o for o in mos.policies.plan().cubes[0].outcomes if o.policy == "eager"]
    assert o.actions == [] and o.skipped[0][1] == f"the memory {ids[0]} is archived"


@pytest.mark.slow
def test_activation_policy_compiles_a_prefix_that_chat_starts_from(alice: Any) -> None:
    """A user who never calls activation.compile: warm memories, apply the policies, chat."""
    mos, cube = alice
    ids = _warm(mos, cube, ["Alice's sister Mira lives in Tromso", "Alice has a beagle named Pretzel",
                            "Alice prefers tea over coffee"])  # fmt: skip
    mos.clock.advance(hours=2)
    plan = mos.policies.plan(cube_ids=[cube])
    report = mos.policies.apply(cube_ids=[cube])
    assert [a.as_dict() for c in plan.cubes for o in c.outcomes for a in o.actions] == [
        a.as_dict() for c in report.cubes for o in c.outcomes for a in o.actions
    ]  # plan = apply
    assert report.counts().get("compile_activation") == 1 and report.counts()["failed"] == 0
    (info,) = mos.activation.list(cube, user_id="alice")
    assert info.name == "auto" and set(info.memory_ids) == set(ids) and info.state == "ready"
    (row,) = _audit_rows(mos, cube, "policy_applied")
    assert row.actor == "policy:activation" and row.details["kv_prefix"] == info.id and row.reason
    r = mos.chat(
        "Where does my sister live?", user_id="alice", cube_ids=[cube], write_back=False, max_tokens=4
    )
    assert r.activation is not None and r.activation["used"] is True and r.activation["id"] == info.id
    # applied again at once: the prefix holds the hot set, nothing to do
    assert mos.policies.apply(cube_ids=[cube]).counts().get("compile_activation") is None
    # a member changes: the prefix is no longer valid; after the debounce it is recompiled,
    # and a chat that still holds the old prefix finishes with it (its file is gone)
    held = mos.activation.for_chat(cube, mos.runtime())
    assert held is not None
    mos.update(ids[1], user_id="alice", text="Alice has a beagle named Biscuit")
    mos.clock.advance(minutes=11)
    report = mos.policies.apply(cube_ids=[cube])  # the changed memory is not stable yet: left out
    (a,) = [a for o in report.cubes[0].outcomes if o.policy == "activation" for a in o.actions]
    assert set(a.memory_ids) == {ids[0], ids[2]} and "no longer valid" in a.reason
    (new,) = mos.activation.list(cube, user_id="alice")
    assert new.id != info.id and not mos.activation.blob_path(info.id).exists()
    rt = mos.runtime()
    prompt = [*held[1].token_ids, *rt.tokenize(" Hi")]
    assert rt.complete(prompt, GenerationParams(max_tokens=2), prefix=held[1]).read()
    r = mos.chat("Hi", user_id="alice", cube_ids=[cube], write_back=False, max_tokens=2)
    assert r.activation["used"] is True and r.activation["id"] == new.id


def _audit_rows(mos: Any, cube: str, action: str) -> list[Any]:
    from sqlalchemy import select

    from memos.plaintext.convert import event_from_row
    from memos.storage.relational.models import AuditRow

    with mos.store.read_session() as s:
        q = select(AuditRow).where(AuditRow.cube_id == cube, AuditRow.action == action).order_by(AuditRow.id)
        return [event_from_row(r) for r in s.scalars(q)]


FAST = {"epochs": 4, "min_epochs": 4, "batch_size": 8, "rank": 16, "alpha": 32, "probe_size": 8, "min_steps": 1}


@pytest.mark.slow
def test_parametric_policy_consolidates_and_retrains_through_jobs(alice: Any) -> None:
    """Consolidation and retrain run as jobs in a worker, not inside ``apply``; marking an
    adapter stale queues its retrain job in that transaction; a purge retires it at once."""
    mos, cube = alice
    mos.settings.parametric = mos.settings.parametric.model_copy(update={"max_ppl_increase": 100.0})
    settings = {"parametric.enabled": True, "parametric.min_new": 2, "parametric.min_hits": 2,
                "parametric.stable_for": "1h", "parametric.idle_for": None, "parametric.train": FAST,
                "activation.enabled": False}  # fmt: skip
    mos.policies.set_many(cube, settings, user_id="alice")
    ids = _warm(
        mos, cube, ["The user's sister Mira lives in Tromsø", "The user has a dog named Biscuit"], times=2
    )
    mos.clock.advance(hours=2)
    report = mos.policies.apply(cube_ids=[cube])
    assert report.counts().get("consolidate_parametric") == 1
    assert mos.parametric.list(cube, user_id="alice") == []  # queued, not trained inline
    (job,) = mos.scheduler.jobs(kind="parametric.consolidate")
    assert job.state == "queued" and job.key == cube and job.payload["train"] == {"replay_weight": 4.0, **FAST}
    assert mos.scheduler.run_worker(until_idle=True) == 1
    (info,) = mos.parametric.list(cube, user_id="alice")
    assert info.name == "auto" and info.state == "active" and set(info.memory_ids) == set(ids)
    assert mos.scheduler.get(job.id).result["adapter"] == info.id
    # nothing fresh left: applied again, nothing to do
    assert mos.policies.apply(cube_ids=[cube]).counts().get("consolidate_parametric") is None
    # a memory inside changes: the policy asks for the retrain (marking the adapter stale
    # queues the job in that transaction; the policy's enqueue finds it)
    mos.update(ids[1], user_id="alice", text="The user has a dog named Pickle")
    assert mos.parametric.show(info.id, user_id="alice").state == "stale"
    (retrain,) = mos.scheduler.jobs(kind="parametric.retrain")  # queued by the marking itself
    assert retrain.state == "queued" and retrain.key == info.id
    report = mos.policies.apply(cube_ids=[cube])
    assert report.counts().get("retrain_parametric") == 1  # the same job: keyed by the adapter
    assert [j.id for j in mos.scheduler.jobs(kind="parametric.retrain")] == [retrain.id]
    # a purge retires it at once (no worker ran) and its retrain stays queued, without the purged memory
    mos.purge(ids[0], user_id="alice", reason="user request")
    retired = mos.parametric.show(info.id, user_id="alice")
    assert retired.state == "retired" and retired.retrain["memory_ids"] == [ids[1]]
    assert [j.id for j in mos.scheduler.jobs(kind="parametric.retrain", state="queued")] == [retrain.id]
    erasure = [o for o in mos.policies.plan(cube_ids=[cube]).cubes[0].outcomes if o.policy == "erasure"]
    assert erasure[0].actions == []  # the purge retired everything already
    # with the policy off, the retrain job defers: the retrain stays pending for later
    mos.policies.set(cube, "parametric.enabled", False, user_id="alice")
    assert mos.scheduler.run_worker(until_idle=True) == 1
    assert "off" in mos.scheduler.get(retrain.id).result["deferred"]
    assert [p.id for p in mos.parametric.pending(cube, user_id="alice")] == [info.id]


@pytest.mark.slow
def test_a_chat_whose_prefix_is_replaced_under_it_loads_the_new_one(alice: Any, monkeypatch: Any) -> None:
    """The swap is atomic: a chat that looked up the old prefix just before a recompile
    replaced it (row gone, file deleted after the commit) looks again and starts from the new."""
    mos, cube = alice
    ids = _warm(
        mos, cube, ["Alice's sister Mira lives in Tromso", "Alice has a beagle named Pretzel"], times=0
    )
    first = mos.activation.compile(cube, user_id="alice", memory_ids=ids[:1], name="auto")
    real = mos.activation._refresh
    replaced: list[Any] = []

    def refresh_then_replace(infos: Any) -> None:
        real(infos)
        if not replaced:  # between the chat's lookup and its load, a policy recompiles
            replaced.append(mos.activation.compile(cube, user_id="alice", memory_ids=ids, name="auto"))

    monkeypatch.setattr(mos.activation, "_refresh", refresh_then_replace)
    r = mos.chat("Hi", user_id="alice", cube_ids=[cube], write_back=False, max_tokens=2)
    assert replaced and r.activation is not None and r.activation["used"] is True
    assert r.activation["id"] == replaced[0].id != first.id
    assert not mos.activation.blob_path(first.id).exists()
    assert [i.id for i in mos.activation.list(cube, user_id="alice")] == [replaced[0].id]


def test_parametric_jobs_whose_adapter_or_cube_went_end_without_failing(alice: Any) -> None:
    mos, cube = alice
    gone = mos.scheduler.enqueue("parametric.retrain", {"adapter_id": "f" * 64}, cube_id=cube, key="f" * 64)
    assert mos.scheduler.run_worker(until_idle=True) == 1
    done = mos.scheduler.get(gone.id)
    assert done.state == "done" and done.result == {"skipped": "the adapter is gone"}
    mos.scheduler.enqueue(
        "parametric.consolidate", {"memory_ids": ["x"], "name": "auto"}, cube_id=cube, key=cube
    )
    mos.delete_cube(cube, user_id="alice")
    assert mos.scheduler.run_worker(until_idle=True) == 1
    (job,) = mos.scheduler.jobs(kind="parametric.consolidate")
    assert job.state == "done" and job.result == {"skipped": "the cube is gone"}


@pytest.mark.slow
def test_the_background_scheduler_compiles_the_prefix_the_next_chat_starts_from(make_mos: Any) -> None:
    """Embedded use: a background worker runs the queued policy.apply; nobody compiles by hand."""
    import time

    mos = make_mos(scheduler={"mode": "background", "poll_seconds": 0.05, "lease_seconds": 120})
    mos.add_user("alice", "Alice")
    cube = mos.create_cube("alice", "personal").id
    ids = _warm(mos, cube, ["Alice's sister Mira lives in Tromso", "Alice prefers tea over coffee"])
    mos.clock.advance(hours=2)
    (job,) = mos.policies.enqueue(cube_ids=[cube])
    deadline = time.monotonic() + 300
    while mos.scheduler.get(job.id).state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
    done = mos.scheduler.get(job.id)
    assert done.state == "done" and done.result["counts"]["compile_activation"] == 1
    r = mos.chat(
        "Where does my sister live?", user_id="alice", cube_ids=[cube], write_back=False, max_tokens=4
    )
    assert r.activation is not None and r.activation["used"] is True
    assert set(r.activation["memory_ids"]) == set(ids)
