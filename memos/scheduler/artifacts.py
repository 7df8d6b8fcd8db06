"""The policies' reach into derived memory: KV prefixes (activation) and LoRA adapters (parametric).

:class:`Artifacts` is the executor's side of the artifact actions of
:mod:`memos.policies.base`: it shows a policy each compiled prefix and adapter of a cube
(:class:`~memos.policies.base.ArtifactView`, checked against the memories' rows: a
member updated, archived, deleted or purged since makes it ``outdated``, and so does, for
a prefix, an adapter it was computed under that is no longer active), checks an action
against the view before it runs, and carries it out:

- ``CompileActivation`` — :meth:`ActivationMemory.compile` at once (a prefill of at most
  ``token_budget`` tokens: seconds), with ``fit``: the runtime counts the tokens and the
  memories that do not fit are left out from the end; under the action's adapters, which
  the kernel checks are the cube's active ones for the runtime;
- ``RetireArtifact`` — the purge's own retirement (:meth:`ActivationMemory.invalidate` /
  :meth:`ParametricMemory.invalidate` with ``purge``), at once;
- ``ConsolidateParametric`` / ``RetrainParametric`` — training takes minutes: queued as
  jobs ``parametric.consolidate`` (keyed by the cube) and ``parametric.retrain`` (keyed by
  the adapter) that a worker runs with progress and cancellation.

A retrain is also queued by parametric memory itself, in the transaction that marks an
adapter stale or retired (:attr:`ParametricMemory.queue_retrain`, wired here): the
manifest keeps what to retrain on, the jobs table is the queue. A ``parametric.retrain``
job trains only when the cube's parametric policy allows it now (enabled, in its window);
otherwise it ends ``done`` with ``deferred`` and the retrain stays pending — the policy
queues it again once allowed, ``memos parametric retrain`` runs it by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from memos import registry
from memos.activation import KIND as KV_KIND
from memos.activation import ActivationMemory
from memos.errors import ConfigError, InvalidInput, NotFound
from memos.home import Home
from memos.parametric import KIND as LORA_KIND
from memos.parametric import ParametricMemory
from memos.policies.base import (
    ArtifactAction,
    ArtifactView,
    CompileActivation,
    ConsolidateParametric,
    CubeView,
    RetireArtifact,
    RetrainParametric,
)
from memos.scheduler.service import Scheduler
from memos.scheduler.worker import JobContext
from memos.storage.relational.models import BlobRow, CubeRow, MemoryRow

CONSOLIDATE = "parametric.consolidate"
RETRAIN = "parametric.retrain"
_KINDS = {KV_KIND: "kv_prefix", LORA_KIND: "lora"}


class Artifacts:
    def __init__(
        self,
        home: Home,
        *,
        activation: ActivationMemory,
        parametric: ParametricMemory,
        scheduler: Scheduler,
        training_blocked: Callable[[str], str | None],
    ) -> None:
        self.home = home
        self.activation = activation
        self.parametric = parametric
        self.scheduler = scheduler
        #: why training may not start now in a cube (the parametric policy's window), or None
        self.training_blocked = training_blocked
        scheduler.register(CONSOLIDATE, self._consolidate_job)
        scheduler.register(RETRAIN, self._retrain_job)
        parametric.queue_retrain = self.queue_retrain

    # ------------------------------------------------------------------ the view
    def views(
        self, s: Session, cube_id: str, rows: Mapping[str, tuple[str, int]]
    ) -> tuple[ArtifactView, ...]:
        """The cube's prefixes and adapters; ``rows``: each memory's (state, version)."""
        out = []
        blobs = select(BlobRow).where(BlobRow.cube_id == cube_id, BlobRow.kind.in_(list(_KINDS)))
        found = list(s.scalars(blobs.order_by(BlobRow.created_at, BlobRow.sha256)))
        active = {
            b.sha256 for b in found if b.kind == LORA_KIND and (b.manifest or {}).get("state") == "active"
        }
        for b in found:
            m = b.manifest or {}
            members = list(m.get("memories") or [])
            fp = m.get("fingerprint") or m.get("base") or {}
            adapters = tuple(m.get("adapters") or ()) if b.kind == KV_KIND else ()
            formats = ("safetensors", *(("gguf",) if m.get("gguf") else ())) if b.kind == LORA_KIND else ()
            outdated = any(rows.get(x["id"]) != ("active", x.get("version")) for x in members)
            outdated = outdated or not set(adapters) <= active
            out.append(
                ArtifactView(
                    kind=_KINDS[b.kind],
                    id=b.sha256,
                    name=str(m.get("name", "default")),
                    state=str(m.get("state", "ready")),
                    memory_ids=tuple(x["id"] for x in members),
                    created_at=b.created_at,
                    runtime=str(fp.get("runtime", "")),
                    model=str(fp.get("model_id", "")),
                    outdated=outdated,
                    retrain=bool(m.get("retrain")),
                    adapters=adapters,
                    formats=formats,
                )
            )
        return tuple(out)

    def lora_format(self) -> str | None:
        """The LoRA file format the configured runtime applies when it computes a KV prefix
        under adapters, said by its class (no model loaded); None when it cannot."""
        try:
            cls = registry.load("memos.runtimes", self.home.settings.runtime.name)
        except ConfigError:
            return None
        if not (getattr(cls, "supports_kv_prefix_lora", False) and getattr(cls, "supports_lora", False)):
            return None
        fmt = getattr(cls, "lora_format", None)
        return str(fmt) if fmt else None

    def problem(self, a: ArtifactAction, view: CubeView) -> str | None:
        """Why ``a`` cannot run on ``view`` (it is skipped), or None."""
        if isinstance(a, RetireArtifact | RetrainParametric):
            wanted = a.artifact_id if isinstance(a, RetireArtifact) else a.adapter_id
            found = next((x for x in view.artifacts if x.id == wanted), None)
            if found is None:
                return "no such artifact in this cube"
            if isinstance(a, RetrainParametric) and not (found.retrain or found.outdated):
                return "no retrain is queued for it"
            return None
        if not isinstance(a, CompileActivation | ConsolidateParametric):
            return f"{a.verb} is not an action the kernel carries out"
        if not a.memory_ids:
            return "no memories named"
        if isinstance(a, CompileActivation) and (why := self._no_kv(a.runtime)) is not None:
            return why
        if isinstance(a, CompileActivation):
            for aid in a.adapters:
                x = next((x for x in view.artifacts_of("lora") if x.id == aid), None)
                if x is None or x.state != "active":
                    return f"the adapter {aid[:12]} is {'gone' if x is None else x.state}"
        for mid in a.memory_ids:
            m = view.get(mid)
            if m is None or m.state != "active":
                return f"the memory {mid} is {'gone' if m is None else m.state}"
        return None

    def _no_kv(self, runtime: str | None) -> str | None:
        """Why ``runtime`` (None: the configured one) cannot hold a KV prefix, said by its
        class (no model loaded); a runtime that cannot be found fails when carried out."""
        name = runtime or self.home.settings.runtime.name
        try:
            cls = registry.load("memos.runtimes", name)
        except ConfigError:
            return None
        if not getattr(cls, "supports_kv_prefix", False):
            return f"the {name} runtime cannot hold activation memory (no KV prefix support)"
        return None

    # ------------------------------------------------------------------ carrying out
    def carry_out(self, a: ArtifactAction, cube_id: str, owner: str, actor: str) -> dict[str, Any]:
        """Do ``a`` for ``cube_id`` as its owner; returns what to audit (details)."""
        if isinstance(a, CompileActivation):
            info = self.activation.compile(
                cube_id, user_id=owner, memory_ids=list(a.memory_ids), token_budget=a.token_budget,
                runtime=a.runtime, name=a.name, fit=True, actor=actor, adapters=list(a.adapters),
            )  # fmt: skip
            return {"kv_prefix": info.id, "memories": len(info.memory_ids), "n_tokens": info.n_tokens}
        if isinstance(a, RetireArtifact):
            service = self.activation if a.kind == "kv_prefix" else self.parametric
            service.invalidate(a.memory_ids, a.reason, purge=True, actor=actor)
            return {"kind": a.kind, "artifact": a.artifact_id}
        if isinstance(a, ConsolidateParametric):
            payload = {"memory_ids": list(a.memory_ids), "name": a.name, "train": dict(a.train)}
            job = self.scheduler.enqueue(CONSOLIDATE, payload, cube_id=cube_id, key=cube_id)
            return {"job": job.id, "memories": len(a.memory_ids)}
        if isinstance(a, RetrainParametric):
            # an adapter whose memories changed is marked stale on its next read, which queues
            # its retrain in that transaction; the enqueue below then finds that job
            self.parametric.show(a.adapter_id, user_id=owner)
            job = self.scheduler.enqueue(
                RETRAIN, {"adapter_id": a.adapter_id}, cube_id=cube_id, key=a.adapter_id
            )
            return {"job": job.id, "adapter": a.adapter_id}
        raise InvalidInput(f"{a.verb} is not an action the kernel carries out")

    def queue_retrain(self, s: Session, adapter_id: str, cube_id: str | None) -> None:
        """Queue adapter ``adapter_id``'s retrain in ``s`` (the transaction marking it)."""
        self.scheduler.queue.enqueue(
            RETRAIN, {"adapter_id": adapter_id}, cube_id=cube_id, key=adapter_id, session=s
        )

    # ------------------------------------------------------------------ jobs
    def _owner(self, cube_id: str | None) -> str | None:
        """The owner of the job's cube; None once the cube is gone (nothing left to train)."""
        with self.home.store.read_session() as s:
            row = s.get(CubeRow, cube_id) if cube_id is not None else None
            return row.owner_id if row is not None else None

    def _train_hooks(self, ctx: JobContext) -> dict[str, Any]:
        def progress(step: int, total: int, loss: float) -> None:
            ctx.progress(min(1.0, step / max(total, 1)), f"step {step}/{total}, loss {loss:.3f}")

        return {"progress": progress, "cancel": ctx.cancel_seen}

    def _consolidate_job(self, ctx: JobContext) -> dict[str, Any]:
        """Train the adapter the parametric policy asked for. Idempotent: an adapter of
        that name already trained on these memories as they are now is not trained again."""
        cube_id, p = ctx.job.cube_id, ctx.job.payload
        owner = self._owner(cube_id)
        if owner is None or cube_id is None:
            return {"skipped": "the cube is gone"}
        wanted = list(p.get("memory_ids") or [])
        with self.home.store.read_session() as s:
            current = {r.id: r.version for r in s.scalars(select(MemoryRow).where(MemoryRow.id.in_(wanted)))
                       if r.state == "active"}  # fmt: skip
            ids = [m for m in wanted if m in current]
            done = {
                b.sha256
                for b in s.scalars(
                    select(BlobRow).where(BlobRow.cube_id == cube_id, BlobRow.kind == LORA_KIND)
                )
                if b.manifest.get("name") == p.get("name")
                and b.manifest.get("state") in ("active", "inactive", "rejected")
                and {(x["id"], x["version"]) for x in b.manifest.get("memories", [])}
                == {(m, current[m]) for m in ids}
            }
        if not ids:
            return {"skipped": "none of its memories is active any more"}
        if done:
            return {"skipped": "already trained", "adapter": sorted(done)[0]}
        info = self.parametric.consolidate(
            cube_id, user_id=owner, memory_ids=ids, name=str(p.get("name") or "auto"),
            config=dict(p.get("train") or {}), **self._train_hooks(ctx),
        )  # fmt: skip
        return {"adapter": info.id, "state": info.state, "memories": len(ids)}

    def _retrain_job(self, ctx: JobContext) -> dict[str, Any]:
        """Run an adapter's queued retrain if the cube's parametric policy allows it now."""
        adapter_id = str(ctx.job.payload.get("adapter_id", ""))
        owner = self._owner(ctx.job.cube_id)
        if owner is None:
            return {"skipped": "the cube is gone"}
        try:
            info = self.parametric.show(adapter_id, user_id=owner)
        except NotFound:
            return {"skipped": "the adapter is gone"}
        if not info.retrain:
            return {"skipped": "no retrain queued (done already)"}
        if (why := self.training_blocked(info.cube_id)) is not None:
            return {"deferred": why}
        new = self.parametric.retrain(adapter_id, user_id=owner, **self._train_hooks(ctx))
        return {
            "adapter": new.id if new is not None else None,
            "state": new.state if new is not None else None,
        }
