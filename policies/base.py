"""What a policy is: a pure decision over a read-only view of a cube, returning actions as data.

A policy never touches a store. The kernel (:mod:`memos.scheduler.policies`) builds a
:class:`CubeView` of a cube — its memories with their state, type, importance, tags,
metadata, times, access statistics and heat, and the statements' vectors when a policy
:meth:`Policy.needs_vectors` — hands it, with the cube's recent audit
events and the time ``now``, to each policy's :meth:`Policy.decide`, and carries out the
:class:`Action` s it returns through the kernel's public services, each audited with the
policy's name (``actor = "policy:<name>"``) and the action's reason. ``memos policy plan``
is the same call without the carrying out.

Policies run in ``order``, each seeing the view as the actions before it left it
(:meth:`CubeView.after`): ``capacity`` does not archive again what ``decay`` just
archived. A policy is registered under the entry-point group ``memos.policies``
(``name = "package.module:Class"``); its ``Settings`` (pydantic, ``extra="forbid"``)
validate ``[policies.<name>]`` in ``config.toml`` and the per-cube overrides.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from functools import cached_property
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from memos.types import AuditEvent, MemoryState

# ---------------------------------------------------------------------------- durations
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(value: Any) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"``, ``"45s"``, a number of days, or a timedelta."""
    if isinstance(value, timedelta):
        out = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"a duration must be finite, got {value!r}")
        out = timedelta(days=value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        out = timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    else:
        raise ValueError(f"a duration is a number with a unit (30d, 12h, 90m, 2w, 45s), got {value!r}")
    if out <= timedelta(0):
        raise ValueError(f"a duration must be positive, got {value!r}")
    return out


def format_duration(value: timedelta) -> str:
    """``value`` in the largest of days, hours, minutes that says it exactly (``14d``, ``36h``)."""
    seconds = value.total_seconds()
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


#: a settings field holding a duration: written ``"30d"``, shown the same way
Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]


class PolicySettings(BaseModel):
    """Base of the policies' settings: unknown keys are errors; ``enabled`` turns a policy off."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True


# ---------------------------------------------------------------------------- the view
@dataclass(frozen=True, slots=True)
class MemoryView:
    """One memory as a policy sees it (no text: its length)."""

    id: str
    type: str
    state: str
    importance: float
    tags: tuple[str, ...]
    metadata: Mapping[str, Any]
    recorded_at: datetime
    updated_at: datetime
    retired_at: datetime | None
    hits: int
    last_accessed: datetime | None
    session_id: str | None
    source_ids: tuple[str, ...]
    chars: int
    #: the heat policy's score (0 until it ran)
    heat: float = 0.0
    #: a statement's (fact, preference, profile, procedure) text with case, punctuation and
    #: spacing folded, for the dedup policy; None for other types and retired memories
    text_key: str | None = None
    #: the subject|predicate|object keys of the current knowledge-graph edges it states
    relations: frozenset[str] = frozenset()
    #: a statement's dense vector (the home's embedder over its text), only when an enabled
    #: policy :meth:`~Policy.needs_vectors`; None otherwise and for every other memory
    vector: tuple[float, ...] | None = None
    #: its version (1 when added; each update, merge or summary refresh adds one)
    version: int = 1
    #: a summary's text digest (:func:`memos.types.text_digest`); None for other types
    digest: str | None = None

    @property
    def last_touched(self) -> datetime:
        """When it was last added or returned by a search."""
        if self.last_accessed is not None and self.last_accessed > self.recorded_at:
            return self.last_accessed
        return self.recorded_at


@dataclass(frozen=True, slots=True)
class ArtifactView:
    """A compiled KV prefix (``kind = "kv_prefix"``) or a LoRA adapter (``"lora"``) of the
    cube, as a policy sees it: its manifest, checked against the memories' rows."""

    kind: str
    id: str
    name: str
    #: kv_prefix: ready | stale | purged; lora: active | inactive | rejected | stale | retired
    state: str
    #: the memories it was built from, in order
    memory_ids: tuple[str, ...]
    created_at: datetime
    #: the runtime and model of its fingerprint
    runtime: str
    model: str
    #: a memory inside was updated, deleted, archived or purged since it was built
    outdated: bool = False
    #: lora: a retrain is queued (after a purge or an update of a memory inside)
    retrain: bool = False
    #: kv_prefix: the ids of the adapters it was computed under
    adapters: tuple[str, ...] = ()
    #: lora: the file formats it is stored in (``safetensors``; ``gguf`` once exported)
    formats: tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        """Still holds what it was built from: not retired, purged or outdated."""
        return self.state not in ("purged", "retired", "stale") and not self.outdated


@dataclass(frozen=True)
class CubeView:
    """A cube as the policies see it: its memories in every state but purged, its compiled
    KV prefixes and adapters, and the home's configured chat runtime (its name, and the
    LoRA file format it applies when it computes a KV prefix under adapters: None when its
    prefixes are computed without them)."""

    cube_id: str
    owner_id: str
    memories: tuple[MemoryView, ...]
    artifacts: tuple[ArtifactView, ...] = ()
    runtime: str | None = None
    lora_format: str | None = None
    _by_id: dict[str, MemoryView] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {m.id: m for m in self.memories})

    def get(self, memory_id: str) -> MemoryView | None:
        return self._by_id.get(memory_id)

    def in_state(self, *states: str) -> list[MemoryView]:
        return [m for m in self.memories if m.state in states]

    @property
    def active(self) -> list[MemoryView]:
        return self.in_state(MemoryState.active)

    @cached_property
    def covered(self) -> frozenset[str]:
        """Memories that a live derived memory (a fact, a summary) was made from: what they
        said survives them in that memory's text and its provenance."""
        live = (MemoryState.active, MemoryState.archived)
        return frozenset(
            src for m in self.memories if m.state in live and m.type != "episode" for src in m.source_ids
        )

    def artifacts_of(self, kind: str) -> list[ArtifactView]:
        return [a for a in self.artifacts if a.kind == kind]

    @property
    def last_activity(self) -> datetime | None:
        """When a memory of the cube was last added, changed or returned by a search."""
        return max((max(m.last_touched, m.updated_at) for m in self.memories), default=None)

    def with_heat(self, heat: Mapping[str, float]) -> CubeView:
        return replace(self, memories=tuple(replace(m, heat=heat.get(m.id, m.heat)) for m in self.memories))

    def with_vectors(self, vectors: Mapping[str, tuple[float, ...]]) -> CubeView:
        return replace(
            self, memories=tuple(replace(m, vector=vectors.get(m.id, m.vector)) for m in self.memories)
        )

    def after(self, actions: Iterable[Action]) -> CubeView:
        """The view once ``actions`` are carried out (what the next policy sees)."""
        moved: dict[str, str | None] = {}
        for a in actions:
            if a.to_state is not None or isinstance(a, Purge):
                moved[a.memory_id] = a.to_state
            if isinstance(a, Merge):
                moved.update(dict.fromkeys(a.merged_ids, MemoryState.superseded))
        if not moved:
            return self
        kept = []
        for m in self.memories:
            if m.id not in moved:
                kept.append(m)
            elif (to := moved[m.id]) is not None:
                kept.append(replace(m, state=to))
        return replace(self, memories=tuple(kept))


# ---------------------------------------------------------------------------- actions
@dataclass(frozen=True, slots=True)
class Action:
    """Something a policy wants done to one memory, and why (shown in the plan, audited)."""

    memory_id: str
    reason: str

    #: the verb, as the plan and the audit log say it
    verb: ClassVar[str] = "noop"
    #: the state the memory is in afterwards (None: gone, or unchanged)
    to_state: ClassVar[str | None] = None

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.verb, "memory_id": self.memory_id, "reason": self.reason}

    @property
    def memory_ids(self) -> tuple[str, ...]:
        """Every memory it acts on, ``memory_id`` first (each must be in a state it may start from)."""
        return (self.memory_id,)


@dataclass(frozen=True, slots=True)
class Archive(Action):
    """Out of default search, restorable (``search(include_archived=True)`` finds it)."""

    verb: ClassVar[str] = "archive"
    to_state: ClassVar[str | None] = MemoryState.archived


@dataclass(frozen=True, slots=True)
class Expire(Action):
    """Out of every search; purged after the ttl policy's grace period unless restored."""

    verb: ClassVar[str] = "expire"
    to_state: ClassVar[str | None] = MemoryState.expired


@dataclass(frozen=True, slots=True)
class Purge(Action):
    """Erased with what was derived only from it (the purge of :meth:`MemOS.purge`)."""

    verb: ClassVar[str] = "purge"


@dataclass(frozen=True, slots=True)
class Restore(Action):
    """Back to active."""

    verb: ClassVar[str] = "restore"
    to_state: ClassVar[str | None] = MemoryState.active


@dataclass(frozen=True, slots=True)
class Summarize(Action):
    """Summarise a session into a ``summary`` memory whose provenance is ``episode_ids``
    (``memory_id`` is the first of them). Built with keywords."""

    session_id: str = ""
    episode_ids: tuple[str, ...] = ()
    #: the summary's length bound (characters)
    max_chars: int = 600

    verb: ClassVar[str] = "summarize"

    def as_dict(self) -> dict[str, Any]:
        return {**Action.as_dict(self), "session_id": self.session_id, "episode_ids": list(self.episode_ids)}

    @property
    def memory_ids(self) -> tuple[str, ...]:
        return (self.memory_id, *(e for e in self.episode_ids if e != self.memory_id))


@dataclass(frozen=True, slots=True)
class RefreshSummary(Action):
    """Rewrite the summary ``memory_id`` of session ``session_id`` from ``episode_ids`` (the
    session's episodes now, some of which it does not link to yet) as a new version of the
    same memory, provided it is still at ``version`` (a person's edit since the plan makes
    it fail rather than be overwritten). Built with keywords."""

    session_id: str = ""
    episode_ids: tuple[str, ...] = ()
    #: the summary's length bound (characters)
    max_chars: int = 600
    version: int = 1

    verb: ClassVar[str] = "refresh_summary"

    def as_dict(self) -> dict[str, Any]:
        return {
            **Action.as_dict(self),
            "session_id": self.session_id,
            "episode_ids": list(self.episode_ids),
            "version": self.version,
        }

    @property
    def memory_ids(self) -> tuple[str, ...]:
        return (self.memory_id, *self.episode_ids)


@dataclass(frozen=True, slots=True)
class Merge(Action):
    """Merge ``merged_ids`` into ``memory_id`` (kept: a new version with the union of their
    provenance and tags); the merged ones become ``superseded`` by it, restorable. Built
    with keywords."""

    merged_ids: tuple[str, ...] = ()

    verb: ClassVar[str] = "merge"

    def as_dict(self) -> dict[str, Any]:
        return {**Action.as_dict(self), "merged_ids": list(self.merged_ids)}

    @property
    def memory_ids(self) -> tuple[str, ...]:
        return (self.memory_id, *self.merged_ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactAction(Action):
    """An action on the cube's derived memory (a KV prefix, an adapter) rather than on one
    memory: ``memory_id`` stays empty (so in :meth:`as_dict`), ``memory_ids`` are the
    memories it is built from (each still active when it runs, or it is skipped)."""

    memory_id: str = ""
    memory_ids: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = {
            "action": self.verb,
            "memory_id": "",
            "reason": self.reason,
            "memory_ids": list(self.memory_ids),
        }
        for f in fields(self):
            if f.name not in ("memory_id", "memory_ids", "reason"):
                out[f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class CompileActivation(ArtifactAction):
    """Compile ``memory_ids`` (in order) into the cube's KV prefix ``name`` for ``runtime``
    (None: the configured one) within ``token_budget`` prefix tokens, counted by the
    runtime (the memories that do not fit are left out, from the end), under the LoRA
    ``adapters`` (ids: the cube's active ones); it replaces the previous prefix of that
    name and model in one transaction."""

    verb: ClassVar[str] = "compile_activation"
    name: str
    runtime: str | None = None
    token_budget: int = 1024
    adapters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RetireArtifact(ArtifactAction):
    """Retire a KV prefix or an adapter built from memories since purged (``memory_ids``):
    its blob files go, its manifest is scrubbed of them (what a purge does at once)."""

    verb: ClassVar[str] = "retire_artifact"
    kind: str
    artifact_id: str

    def as_dict(self) -> dict[str, Any]:  # the purged ids are not repeated in a plan
        return {"action": self.verb, "memory_id": "", "reason": self.reason, "kind": self.kind,
                "artifact_id": self.artifact_id}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsolidateParametric(ArtifactAction):
    """Queue a ``parametric.consolidate`` job: train adapter ``name`` on ``memory_ids``
    (the gate decides whether it becomes the cube's active adapter)."""

    verb: ClassVar[str] = "consolidate_parametric"
    name: str
    #: training options over ``[parametric]`` (epochs, rank, …), as (key, value) pairs
    train: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrainParametric(ArtifactAction):
    """Queue the ``parametric.retrain`` job of adapter ``adapter_id`` (its queued retrain)."""

    verb: ClassVar[str] = "retrain_parametric"
    adapter_id: str


# ---------------------------------------------------------------------------- the policy
class Policy(ABC):
    """A decision over a cube. Subclasses set ``name``, ``Settings`` and ``order``."""

    name: ClassVar[str]
    Settings: ClassVar[type[PolicySettings]] = PolicySettings
    #: policies run in this order (then by name); each sees what the earlier ones decided
    order: ClassVar[int] = 50

    @abstractmethod
    def decide(
        self, view: CubeView, events: Sequence[AuditEvent], now: datetime, settings: Any
    ) -> list[Action]:
        """What to do with ``view`` at ``now``. Pure: the same input gives the same actions."""

    def needs_vectors(self, settings: Any) -> bool:
        """Whether :meth:`decide` reads the statements' :attr:`MemoryView.vector` with these
        settings. Embedding a cube's statements costs: the kernel does it only when an
        enabled policy of the cube says so (False for all but ``dedup`` with
        ``vector_similarity`` set)."""
        return False

    def scores(self, view: CubeView, now: datetime, settings: Any) -> Mapping[str, float] | None:
        """Heat per memory id, for the policies after this one (:attr:`MemoryView.heat`);
        ``None`` for a policy that does not score (all but ``heat``)."""
        return None


def days(delta: timedelta) -> float:
    return delta.total_seconds() / 86400
