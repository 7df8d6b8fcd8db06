"""``mos.policies``: the scheduler's policies, run over each cube (plan, apply, settings).

A policy (:mod:`memos.policies.base`) is a pure decision: it gets a read-only
:class:`~memos.policies.base.CubeView` (:mod:`memos.scheduler.views`: the rows and access
statistics, and the statements' vectors, embedded only when an enabled policy ``needs_vectors``),
the cube's audit events since the last apply and the time ``now`` (the home's clock),
and returns actions as data. :meth:`Policies.plan` asks every policy in order, each
seeing the view as the earlier ones left it; :meth:`Policies.apply` computes the very
same plan and carries each action out through the lifecycle service (archive, expire,
restore, purge, merge), the summaries service (summarize, refresh_summary) or, for
actions on derived memory (KV prefixes, adapters), :mod:`memos.scheduler.artifacts` (audited as
``policy_applied``), with ``actor = "policy:<name>"`` and the policy's reason. A
policy that raises — or returns something that is not an action — is recorded in the
plan (and, on apply, in the audit log as ``policy_failed``) and the others still run; an
action the memory's state no longer allows (another policy, or a user, got there first)
is skipped and said so.

Settings of a policy: its ``Settings`` model's defaults, then ``[policies.<name>]`` of
``config.toml`` (``Settings.policies``), then the cube's overrides (``CubeRow.settings
["policies"]``, set by the cube's owner with :meth:`Policies.set`); dictionaries merge
key by key. The job kind ``policy.apply`` (one per cube, keyed by the cube id) runs
:meth:`Policies.apply` in a worker.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from memos import acl, registry
from memos.activation import ActivationMemory
from memos.errors import InvalidInput, MemosError, NotFound
from memos.events import Event, EventKind
from memos.home import Home
from memos.memories.lifecycle import Lifecycle
from memos.memories.summaries import Summaries
from memos.parametric import ParametricMemory
from memos.policies.base import (
    Action,
    Archive,
    ArtifactAction,
    Expire,
    Merge,
    Policy,
    Purge,
    RefreshSummary,
    Restore,
    Summarize,
)
from memos.policies.parametric import ParametricSettings
from memos.policies.parametric import allowed as training_allowed
from memos.scheduler.artifacts import Artifacts
from memos.scheduler.jobs import Job
from memos.scheduler.service import POLICY_JOB, Scheduler
from memos.scheduler.views import APPLIED_AT, CubeViews
from memos.scheduler.worker import JobContext
from memos.storage.relational.models import CubeRow
from memos.types import MemoryState

log = logging.getLogger(__name__)

GROUP = "memos.policies"
#: the states each action may start from
_FROM: dict[type[Action], frozenset[str]] = {
    Archive: frozenset({MemoryState.active}),
    Expire: frozenset({MemoryState.active, MemoryState.archived}),
    Restore: frozenset({MemoryState.archived, MemoryState.expired, MemoryState.deleted}),
    Purge: frozenset(MemoryState),
    Summarize: frozenset({MemoryState.active, MemoryState.archived}),
    RefreshSummary: frozenset({MemoryState.active, MemoryState.archived}),
    Merge: frozenset({MemoryState.active}),
}


@dataclass(slots=True)
class PolicyOutcome:
    """What one policy decided for one cube (and, on apply, what came of it)."""

    policy: str
    enabled: bool = True
    actions: list[Action] = field(default_factory=list)
    #: why the policy itself failed (its actions, if any, are not carried out)
    error: str | None = None
    #: actions dropped before running: the memory was gone or in a state they cannot start from
    skipped: list[tuple[Action, str]] = field(default_factory=list)
    #: on apply: actions the kernel refused, with why
    failed: list[tuple[Action, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "enabled": self.enabled,
            "actions": [a.as_dict() for a in self.actions],
            "error": self.error,
            "skipped": [{**a.as_dict(), "why": why} for a, why in self.skipped],
            "failed": [{**a.as_dict(), "error": why} for a, why in self.failed],
        }


@dataclass(slots=True)
class CubePlan:
    cube_id: str
    outcomes: list[PolicyOutcome]

    def as_dict(self) -> dict[str, Any]:
        return {"cube_id": self.cube_id, "policies": [o.as_dict() for o in self.outcomes]}


@dataclass(slots=True)
class PolicyReport:
    """The plan of each cube at ``now``; ``applied``: whether it was carried out."""

    now: datetime
    applied: bool
    cubes: list[CubePlan]

    def counts(self) -> dict[str, int]:
        """Actions per verb over every cube (failed ones excluded on apply), and failures."""
        out: dict[str, int] = {}
        for cube in self.cubes:
            for o in cube.outcomes:
                bad = {id(a) for a, _ in o.failed}
                for a in o.actions:
                    if id(a) not in bad:
                        out[a.verb] = out.get(a.verb, 0) + 1
                out["failed"] = out.get("failed", 0) + len(o.failed) + (o.error is not None)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "applied": self.applied,
            "counts": self.counts(),
            "cubes": [c.as_dict() for c in self.cubes],
        }


class Policies:
    def __init__(
        self,
        home: Home,
        *,
        lifecycle: Lifecycle,
        summaries: Summaries,
        scheduler: Scheduler,
        activation: ActivationMemory,
        parametric: ParametricMemory,
    ) -> None:
        self.home = home
        self.lifecycle = lifecycle
        self.summaries = summaries
        self.scheduler = scheduler
        #: KV prefixes and adapters: their views, their actions, the parametric jobs
        self.artifacts = Artifacts(
            home, activation=activation, parametric=parametric, scheduler=scheduler,
            training_blocked=self.training_blocked,
        )  # fmt: skip
        #: policies registered in this process (:meth:`register`), beside the installed ones
        self._registered: dict[str, Policy] = {}
        self._loaded: dict[str, Policy] | None = None
        #: installed policies that could not be loaded, with why (reported in every plan)
        self._broken: dict[str, str] = {}
        #: the read-only views of the cubes the policies decide on
        self.views = CubeViews(home, self.artifacts)
        scheduler.register(POLICY_JOB, self._run_job)

    # ------------------------------------------------------------------ which policies
    def register(self, policy: Policy | type[Policy]) -> None:
        """Run ``policy`` in this process as if it were installed under ``memos.policies``."""
        instance = policy() if isinstance(policy, type) else policy
        if not isinstance(instance, Policy):
            raise InvalidInput(f"{policy!r} is not a memos.policies.base.Policy")
        self._registered[instance.name] = instance

    def installed(self) -> list[Policy]:
        """Every policy, in the order they run (a plugin that fails to load is logged, left
        out, and reported as failed in each plan)."""
        if self._loaded is None:
            loaded: dict[str, Policy] = {}
            for name in registry.available(GROUP):
                try:
                    cls = registry.load(GROUP, name)
                    policy = cls() if isinstance(cls, type) else cls
                    if not isinstance(policy, Policy):
                        raise TypeError(f"{type(policy).__name__} is not a memos.policies.base.Policy")
                    loaded[name] = policy
                except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the built-ins
                    log.exception("could not load policy %r", name)
                    self._broken[name] = f"could not load: {type(exc).__name__}: {exc}"[:500]
            self._loaded = loaded
        found = {**self._loaded, **self._registered}
        return sorted(found.values(), key=lambda p: (p.order, p.name))

    def _policy(self, name: str) -> Policy:
        for p in self.installed():
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.installed()) or "none"
        raise InvalidInput(f"no policy named {name!r}; known: {known}")

    # ------------------------------------------------------------------ settings
    def settings(self, cube_id: str | None = None, *, user_id: str | None = None) -> dict[str, Any]:
        """Each policy's settings in effect (for ``cube_id``: with its overrides), as JSON;
        ``{"error": …}`` for a policy whose settings do not validate."""
        overrides = self._overrides(cube_id, user_id) if cube_id is not None else {}
        out: dict[str, Any] = {}
        for p in self.installed():
            try:
                out[p.name] = self._resolve(p, overrides.get(p.name)).model_dump(mode="json")
            except InvalidInput as exc:
                out[p.name] = {"error": str(exc)}
        return out

    def overrides(self, cube_id: str, *, user_id: str | None = None) -> dict[str, Any]:
        """What the cube's owner set for this cube (``memos policy set``)."""
        return self._overrides(cube_id, user_id)

    def set(self, cube_id: str, key: str, value: Any, *, user_id: str) -> dict[str, Any]:
        """Override ``policy.field[.key]`` for one cube (its owner only); ``None`` sets null
        (``decay.after = None`` turns decay off there). Validated with the defaults and the
        home's configuration before anything is stored. Returns the policy's settings now."""
        return self.set_many(cube_id, {key: value}, user_id=user_id)[key.split(".", 1)[0]]

    def set_many(self, cube_id: str, values: Mapping[str, Any], *, user_id: str) -> dict[str, Any]:
        """:meth:`set` for several keys at once: all stored, or (one is invalid) none.
        Returns the settings now of each policy named."""
        return self._change(cube_id, [(k, v, False) for k, v in values.items()], user_id)

    def unset(self, cube_id: str, *keys: str, user_id: str) -> dict[str, Any]:
        """Drop a cube's overrides (``ttl.types.episode``, or a whole ``ttl``): the
        defaults and the configuration apply again. Returns the settings now of each policy named."""
        return self._change(cube_id, [(k, None, True) for k in keys], user_id)

    def _change(self, cube_id: str, ops: list[tuple[str, Any, bool]], user_id: str) -> dict[str, Any]:
        parsed = []
        for key, value, remove in ops:
            if not isinstance(key, str) or not key.strip():
                raise InvalidInput("a policy setting is named policy.field, e.g. ttl.types.episode")
            name, *path = key.strip().split(".")
            self._policy(name)
            if not path and not remove:
                raise InvalidInput(f"name a setting of the {name} policy: {name}.<field>")
            parsed.append((name, path, value, remove))
        if not parsed:
            raise InvalidInput("name at least one policy setting")
        now = self.home.clock()
        with self.home.recording() as rec, self.home.write_lock, self.home.store.session() as s:
            acl.require(s, cube_id, user_id, acl.OWNER)
            row = s.get(CubeRow, cube_id)
            assert row is not None
            stored = copy.deepcopy(dict(row.settings or {}))
            mine: dict[str, Any] = dict(stored.get("policies") or {})
            events = []
            for name, path, value, remove in parsed:
                before = mine.get(name) or {}
                ours = _unset(before, path, name) if remove else _put(before, path, value)
                if ours:
                    mine[name] = ours
                else:
                    mine.pop(name, None)
                details = {"policy": name, "key": ".".join(path), "value": None if remove else value}
                events.append(Event(EventKind.policy_set, now, user_id, cube_id, (), None, details))
            # every policy touched is validated before anything is written
            resolved = {name: self._resolve(self._policy(name), mine.get(name)) for name, *_ in parsed}
            stored["policies"] = mine
            row.settings = stored
            rec.record(s, *events)
        return {name: r.model_dump(mode="json") for name, r in resolved.items()}

    def _overrides(self, cube_id: str, user_id: str | None) -> dict[str, Any]:
        with self.home.store.read_session() as s:
            if user_id is not None:
                acl.require(s, cube_id, user_id, acl.READ)
            row = s.get(CubeRow, cube_id)
            if row is None:
                raise NotFound(f"unknown cube {cube_id!r}")
            return dict((row.settings or {}).get("policies") or {})

    def _resolve(self, policy: Policy, override: Mapping[str, Any] | None) -> BaseModel:
        """Defaults < ``[policies.<name>]`` < the cube's override, validated."""
        values = _merge(self.home.settings.policies.get(policy.name) or {}, override or {})
        try:
            return policy.Settings.model_validate(values)
        except ValidationError as exc:
            raise InvalidInput(registry.describe(exc, GROUP, policy.name, policy.Settings)) from exc

    # ------------------------------------------------------------------ plan and apply
    def plan(
        self, *, cube_ids: Sequence[str] | str | None = None, user_id: str | None = None
    ) -> PolicyReport:
        """What each policy would do now, and why (a dry run of :meth:`apply`)."""
        now = self.home.clock()
        return PolicyReport(now, False, [self._plan(c, now)[0] for c in self._cubes(cube_ids, user_id)])

    def apply(
        self,
        *,
        cube_ids: Sequence[str] | str | None = None,
        user_id: str | None = None,
        progress: Callable[[float, str], None] | None = None,
    ) -> PolicyReport:
        """Compute the plan of each cube and carry it out. The cubes the user owns (no
        user: every cube, the operator); ``progress`` hears of each cube done."""
        now = self.home.clock()
        cubes = self._cubes(cube_ids, user_id)
        out = []
        for i, cube_id in enumerate(cubes):
            plan, owner = self._plan(cube_id, now)
            self._carry_out(plan, owner, now)
            out.append(plan)
            if progress is not None:
                progress((i + 1) / len(cubes), f"cube {cube_id}")
        return PolicyReport(now, True, out)

    def enqueue(
        self,
        *,
        cube_ids: Sequence[str] | str | None = None,
        user_id: str | None = None,
        run_after: datetime | None = None,
    ) -> list[Job]:
        """Queue a ``policy.apply`` job per cube (the live one of a cube if there is one)."""
        return [
            self.scheduler.enqueue(POLICY_JOB, {}, user_id=user_id, cube_id=c, key=c, run_after=run_after)
            for c in self._cubes(cube_ids, user_id)
        ]

    def _run_job(self, ctx: JobContext) -> dict[str, Any]:
        cubes = [ctx.job.cube_id] if ctx.job.cube_id is not None else None
        report = self.apply(cube_ids=cubes, progress=ctx.progress)
        return {"counts": report.counts(), "cubes": len(report.cubes)}

    def _cubes(self, cube_ids: Sequence[str] | str | None, user_id: str | None) -> list[str]:
        with self.home.store.read_session() as s:
            return acl.maintained_cubes(s, user_id, cube_ids, acl.OWNER)

    def _plan(self, cube_id: str, now: datetime) -> tuple[CubePlan, str]:
        """The cube's plan at ``now`` and its owner (whose access the actions run under)."""
        view, events = self.views.view(cube_id)
        overrides = self._cube_settings(cube_id)
        policies = self.installed()
        configs = {p.name: self._configure(p, overrides.get(p.name)) for p in policies}
        unembedded = None  # why the statements have no vectors, when a policy needed them
        if any(needs for _, needs in configs.values()):
            try:
                view = view.with_vectors(self.views.statement_vectors(view))
            except Exception as exc:  # noqa: BLE001 - the policies that need vectors fail; the others run
                log.warning("could not embed the statements of cube %s: %s", cube_id, exc)
                unembedded = f"could not embed the cube's statements: {type(exc).__name__}: {exc}"[:500]
        outcomes = [PolicyOutcome(name, error=why) for name, why in sorted(self._broken.items())]
        for policy in policies:
            outcome = PolicyOutcome(policy.name)
            outcomes.append(outcome)
            try:
                cfg, needs_vectors = configs[policy.name]
                if isinstance(cfg, Exception):
                    raise cfg
                if not getattr(cfg, "enabled", True):
                    outcome.enabled = False
                    continue
                if needs_vectors and unembedded is not None:
                    outcome.error = unembedded
                    continue
                heat = policy.scores(view, now, cfg)
                if heat is not None:
                    view = view.with_heat(heat)
                actions = policy.decide(view, events, now, cfg)
                if not isinstance(actions, list) or not all(isinstance(a, Action) for a in actions):
                    raise TypeError(f"decide returned {type(actions).__name__}, not a list of actions")
            except Exception as exc:  # noqa: BLE001 - a failing policy is recorded; the others run
                log.warning("policy %s failed on cube %s: %s", policy.name, cube_id, exc)
                outcome.error = f"{type(exc).__name__}: {exc}"[:500]
                continue
            for a in actions:
                if isinstance(a, ArtifactAction):
                    if (why := self.artifacts.problem(a, view)) is not None:
                        outcome.skipped.append((a, why))
                    else:
                        outcome.actions.append(a)
                    continue
                found = [view.get(x) for x in a.memory_ids]
                allowed = next((v for k, v in _FROM.items() if isinstance(a, k)), None)
                if any(m is None for m in found):
                    outcome.skipped.append((a, "no such memory in this cube (or already purged)"))
                elif allowed is None:
                    outcome.skipped.append((a, f"{a.verb} is not an action the kernel carries out"))
                elif bad := [m for m in found if m is not None and m.state not in allowed]:
                    which = f"the memory {bad[0].id}" if len(found) > 1 else "the memory"
                    outcome.skipped.append((a, f"{which} is {bad[0].state}"))
                else:
                    outcome.actions.append(a)
                    view = view.after([a])
        return CubePlan(cube_id, outcomes), view.owner_id

    def _configure(
        self, policy: Policy, override: Mapping[str, Any] | None
    ) -> tuple[BaseModel | Exception, bool]:
        """The policy's settings for a cube (or why they failed), and whether it wants vectors."""
        try:
            cfg = self._resolve(policy, override)
            return cfg, bool(getattr(cfg, "enabled", True) and policy.needs_vectors(cfg))
        except Exception as exc:  # noqa: BLE001 - reported as the policy's failure in the plan
            return exc, False

    def training_blocked(self, cube_id: str | None) -> str | None:
        """Why the cube's parametric policy does not let training start now, or None."""
        policy = next((p for p in self.installed() if p.name == "parametric"), None)
        if policy is None or cube_id is None:
            return "the parametric policy is not installed"
        cfg = self._resolve(policy, self._cube_settings(cube_id).get("parametric"))
        if not isinstance(cfg, ParametricSettings) or not cfg.enabled:
            return "the parametric policy is off for this cube"
        return training_allowed(self.views.view(cube_id)[0], self.home.clock(), cfg)

    def _cube_settings(self, cube_id: str) -> dict[str, Any]:
        with self.home.store.read_session() as s:
            row = s.get(CubeRow, cube_id)
            return dict((row.settings or {}).get("policies") or {}) if row is not None else {}

    def _carry_out(self, plan: CubePlan, owner: str, now: datetime) -> None:
        """Run each action through the lifecycle service as ``policy:<name>``; record failures."""
        records = []
        for o in plan.outcomes:
            actor = f"policy:{o.policy}"
            if o.error is not None:
                details = {"policy": o.policy, "error": o.error}
                records.append(Event(EventKind.policy_failed, now, actor, plan.cube_id, (), None, details))
            for a in o.actions:
                if isinstance(a, ArtifactAction):  # audited here: no memory changes state
                    try:
                        done = self.artifacts.carry_out(a, plan.cube_id, owner, actor)
                    except Exception as exc:  # noqa: BLE001 - e.g. the runtime could not load; the others run
                        log.warning(
                            "policy %s: %s failed on cube %s: %s", o.policy, a.verb, plan.cube_id, exc
                        )
                        o.failed.append((a, f"{type(exc).__name__}: {exc}"[:500]))
                    else:
                        details = {"policy": o.policy, "action": a.verb, **done}
                        records.append(
                            Event(EventKind.policy_applied, now, actor, plan.cube_id, (), a.reason, details)
                        )
                    continue
                try:
                    if isinstance(a, Purge):
                        self.lifecycle.purge(a.memory_id, user_id=owner, reason=a.reason, actor=actor)
                    elif isinstance(a, Merge):
                        self.lifecycle.merge(
                            a.memory_id, a.merged_ids, user_id=owner, reason=a.reason, actor=actor
                        )
                    elif isinstance(a, Summarize):
                        self.summaries.summarize_session(
                            plan.cube_id, a.session_id, episode_ids=a.episode_ids, max_chars=a.max_chars,
                            user_id=owner, reason=a.reason, actor=actor,
                        )  # fmt: skip
                    elif isinstance(a, RefreshSummary):
                        self.summaries.summarize_session(
                            plan.cube_id, a.session_id, episode_ids=a.episode_ids, max_chars=a.max_chars,
                            refresh=True, if_version=a.version, user_id=owner, reason=a.reason, actor=actor,
                        )  # fmt: skip
                    else:
                        step = {
                            Archive: self.lifecycle.archive,
                            Expire: self.lifecycle.expire,
                            Restore: self.lifecycle.restore,
                        }[type(a)]
                        step(a.memory_id, user_id=owner, reason=a.reason, actor=actor)
                except MemosError as exc:  # e.g. a user changed the memory since the plan
                    o.failed.append((a, f"{type(exc).__name__}: {exc}"))
        with self.home.recording() as rec, self.home.write_lock, self.home.store.session() as s:
            rec.record(s, *records)
            row = s.get(CubeRow, plan.cube_id)
            if row is not None:
                row.settings = {**(row.settings or {}), APPLIED_AT: now.isoformat()}


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``, dictionaries merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _put(tree: Mapping[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    out = dict(tree)
    head, *rest = path
    if rest:
        below = out.get(head)
        out[head] = _put(below if isinstance(below, Mapping) else {}, rest, value)
    else:
        out[head] = value
    return out


def _unset(tree: Mapping[str, Any], path: list[str], name: str) -> dict[str, Any]:
    if not path:
        return {}
    out = dict(tree)
    head, *rest = path
    if head not in out:
        raise InvalidInput(f"no override {name}.{'.'.join(path)} is set on this cube")
    if rest and isinstance(out[head], Mapping):
        below = _unset(out[head], rest, f"{name}.{head}")
        if below:
            out[head] = below
        else:
            del out[head]
    else:
        del out[head]
    return out
