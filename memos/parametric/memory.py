"""``ParametricMemory``: consolidate, list, show, activate, deactivate, drop, retrain,
and the chat's lookup.

Built with the home and a way to get a runtime; see :mod:`memos.parametric` for the gate,
the forward pass and erasure.
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from memos import acl
from memos.blobs import BlobStore
from memos.errors import InvalidInput, InvalidState, NotFound
from memos.events import Event, EventKind
from memos.home import Home
from memos.parametric import lora
from memos.parametric.data import build_examples, data_hash, trainable
from memos.parametric.gate import evaluate
from memos.parametric.lora import FORMAT, KIND, LoraInfo, State, same_base
from memos.parametric.train import EpochReport, TrainConfig
from memos.protocols import Runtime
from memos.storage.relational.models import BlobRow, MemoryRow

CONSOLIDATE_TYPES = ("fact", "profile", "preference", "procedure")

ProgressFn = Callable[[int, int, float], None]


class ParametricMemory:
    """``mos.parametric``: consolidate, list, show, activate, deactivate, drop, retrain.

    ``runtimes(name=None, **overrides)`` returns the loaded runtime ``name`` (default: the
    configured one), as ``MemOS.runtime`` does; training asks it for ``transformers``."""

    def __init__(self, home: Home, *, runtimes: Callable[..., Runtime]) -> None:
        self.home = home
        self.runtimes = runtimes
        self.blobs = BlobStore(home.settings.home)
        #: queues an adapter's retrain as a job in the caller's transaction — ``(session,
        #: adapter id, cube id)``; wired by the scheduler (``parametric.retrain``). Without
        #: it the manifest's ``retrain`` entry is the only record (``pending``).
        self.queue_retrain: Callable[[Session, str, str | None], None] | None = None

    def blob_path(self, sha: str, suffix: str = ".safetensors") -> Path:
        return self.blobs.path(sha, suffix)

    # ------------------------------------------------------------------ consolidate
    def consolidate(
        self,
        cube_id: str,
        *,
        user_id: str,
        memory_ids: Sequence[str] | None = None,
        top_n: int = 200,
        name: str = "default",
        config: TrainConfig | Mapping[str, Any] | None = None,
        model: str | None = None,
        runtime: Runtime | None = None,
        activate: bool = True,
        export_gguf: bool = True,
        progress: ProgressFn | None = None,
        on_epoch: Callable[[EpochReport], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> LoraInfo:
        """Train an adapter on the cube's memories (``memory_ids``, or the top ``top_n``
        facts, profile and preference memories by importance, use and recency), evaluate
        it, gate it, store it. Returns its manifest; ``state`` says whether it passed
        (``active``, or ``inactive`` with ``activate=False``) or was ``rejected``; its
        ``left_out`` names the memories it holds but did not train on
        (:func:`~memos.parametric.data.trainable`).

        ``cancel`` (an Event set from another thread) stops training between steps with
        :class:`~memos.errors.Cancelled`; nothing is stored then."""
        from memos.parametric.train import Trainer

        home = self.home
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise InvalidInput("name must be a non-empty string of at most 64 characters")
        cfg = self._config(config)
        home.access.flush()  # the selectors order by hits
        with home.store.session() as s:
            acl.require(s, cube_id, user_id, acl.WRITE)
            rows = self._choose(s, cube_id, memory_ids, top_n)
            chosen = [(r.id, r.text, r.version) for r in rows]
            owner_name = acl.user(s, user_id).name
        if not chosen:
            raise InvalidInput(
                "no memories to consolidate (the cube has no active facts, profile or preferences)"
            )
        rt = runtime if runtime is not None else self._train_runtime(model)
        if not getattr(rt, "supports_training", False):
            raise InvalidInput(
                "consolidation trains on the transformers runtime (a local checkpoint of the base model)"
            )
        system_prompt = home.settings.chat.system_prompt.replace("{user}", owner_name)
        # left out: a memory that reads as no fact ("Caroline plans to build my own family":
        # whose?), which no question checks and which trained as text only moves the model
        # elsewhere, and objects past a list answer's length (they stay in plaintext memory)
        readable, left_out = trainable([(mid, text) for mid, text, _ in chosen], owner_name,
                                       max_shared=cfg.max_shared)  # fmt: skip
        examples = build_examples(readable, owner_name, seed=cfg.seed)
        trainer = Trainer(rt, cfg, system_prompt, cancel)
        result, model_obj = trainer.train(examples, progress, on_epoch)
        max_ppl_increase = home.settings.parametric.max_ppl_increase
        evaluation = evaluate(rt, model_obj, result.state, examples, system_prompt, cfg, max_ppl_increase)
        del model_obj
        state: State = ("active" if activate else "inactive") if evaluation.passed else "rejected"
        data = self._serialize(result.state, cfg, rt)
        sha = self.blobs.write(data)
        written = [self.blobs.path(sha)]
        gguf: dict[str, Any] | None = None
        try:
            if export_gguf and evaluation.passed:
                gguf = self._export_gguf(result.state, cfg, rt)
                written.append(self.blobs.path(gguf["sha256"], ".gguf"))
            manifest = {
                "name": name,
                "state": state,
                "reason": None if evaluation.passed else "; ".join(evaluation.reasons),
                "base": rt.fingerprint.as_dict(),
                "memories": [{"id": mid, "version": v} for mid, _, v in chosen],
                "left_out": left_out,
                "hyper": cfg.to_dict(),
                "data_hash": data_hash(examples),
                "n_examples": {
                    "train": sum(e.split == "train" for e in examples),
                    "valid": sum(e.split == "valid" for e in examples),
                    "heldout": sum(e.split == "heldout" for e in examples),
                },
                "evaluation": evaluation.model_dump(),
                "epochs": [vars(e) for e in result.epochs],
                "best_epoch": result.best_epoch,
                "train_s": round(result.train_s, 1),
                "gguf": gguf,
                "system_prompt": system_prompt,
            }
            now = home.clock()
            with home.write_lock, home.store.session() as s:
                if state == "active":
                    self._deactivate_others(s, cube_id, rt.fingerprint.as_dict(), sha)
                row = s.get(BlobRow, sha)
                if row is None:
                    s.add(
                        BlobRow(
                            sha256=sha,
                            cube_id=cube_id,
                            kind=KIND,
                            size=len(data),
                            created_at=now,
                            manifest=manifest,
                        )
                    )
                else:
                    row.manifest = manifest
                self._clear_queued(s, cube_id, [mid for mid, _, _ in chosen])
        except BaseException:
            for path in written:  # no half-written state: files without a manifest go
                path.unlink(missing_ok=True)
            raise
        info = lora.info(sha, cube_id, len(data), now, manifest)
        details = {"kind": "lora", "id": sha, "name": name, "state": state}
        self._publish(Event(EventKind.artifact_compiled, now, user_id, cube_id, tuple(info.memory_ids),
                            details=details))  # fmt: skip
        return info

    def _config(self, config: TrainConfig | Mapping[str, Any] | None) -> TrainConfig:
        if isinstance(config, TrainConfig):
            return config
        p = self.home.settings.parametric
        # training aims at the gate's bound (on its own anchor text): one setting, not two
        defaults = {"rank": p.rank, "alpha": p.alpha, "lr": p.lr, "epochs": p.epochs, "batch_size": p.batch_size,
                    "seed": p.seed, "max_drift": 1 + p.max_ppl_increase}  # fmt: skip
        try:
            cfg = TrainConfig(**{**defaults, **dict(config or {})})
        except TypeError as exc:
            raise InvalidInput(f"unknown training option: {exc}") from exc
        if min(cfg.rank, cfg.epochs, cfg.batch_size, cfg.min_steps, cfg.max_shared) < 1 or not 0 < cfg.lr < 1:
            raise InvalidInput(
                "rank, epochs, batch_size, min_steps and max_shared must be positive and lr in (0, 1)"
            )
        return cfg

    def _choose(
        self, s: Session, cube_id: str, memory_ids: Sequence[str] | None, top_n: int
    ) -> builtins.list[MemoryRow]:
        if memory_ids is not None:
            rows = []
            for mid in dict.fromkeys(memory_ids):
                row = s.get(MemoryRow, mid)
                if row is None or row.cube_id != cube_id:
                    raise NotFound(f"no memory {mid!r} in cube {cube_id!r}")
                if row.state != "active":
                    raise InvalidState(f"memory {mid} is {row.state}; only active memories are consolidated")
                rows.append(row)
            return rows
        if isinstance(top_n, bool) or not isinstance(top_n, int) or not 1 <= top_n <= 5000:
            raise InvalidInput("top_n must be an integer from 1 to 5000")
        q = (
            select(MemoryRow)
            .where(
                MemoryRow.cube_id == cube_id,
                MemoryRow.state == "active",
                MemoryRow.type.in_(CONSOLIDATE_TYPES),
            )
            .order_by(MemoryRow.importance.desc(), MemoryRow.hits.desc(), MemoryRow.recorded_at.desc())
            .limit(top_n)
        )
        return list(s.scalars(q))

    def _train_runtime(self, model: str | None) -> Runtime:
        """The transformers runtime of the base model (training needs its checkpoint)."""
        return self.runtimes("transformers", model=model) if model else self.runtimes("transformers")

    def _serialize(self, state: dict[str, Any], cfg: TrainConfig, rt: Any) -> bytes:
        from safetensors.torch import save

        meta = {
            "format": FORMAT,
            "base": json.dumps(rt.fingerprint.as_dict(), sort_keys=True),
            "rank": str(cfg.rank),
            "alpha": str(cfg.alpha),
            "target_modules": ",".join(cfg.target_modules),
        }
        return bytes(save(dict(sorted(state.items())), metadata=meta))

    def _export_gguf(self, state: dict[str, Any], cfg: TrainConfig, rt: Any) -> dict[str, Any]:
        import tempfile

        from memos.parametric.gguf_lora import export_gguf_lora

        config = json.loads((Path(rt.path) / "config.json").read_text())
        with tempfile.TemporaryDirectory(dir=self.home.settings.home) as tmp:
            path = export_gguf_lora(state, config, cfg.alpha, Path(tmp) / "adapter.gguf")
            data = path.read_bytes()
        sha = self.blobs.write(data, ".gguf")
        return {"sha256": sha, "bytes": len(data)}

    # ------------------------------------------------------------------ read and manage
    def list(self, cube_id: str, *, user_id: str) -> builtins.list[LoraInfo]:
        """The cube's adapters (every state), newest first."""
        with self.home.store.session() as s:
            acl.require(s, cube_id, user_id, acl.READ)
            out = [lora.info_of(r) for r in lora.rows(s, cube_id)]
        self._refresh(out)
        return sorted(out, key=lambda i: i.created_at, reverse=True)

    def show(self, adapter_id: str, *, user_id: str) -> LoraInfo:
        with self.home.store.session() as s:
            row = lora.find(s, adapter_id)
            acl.require(s, row.cube_id, user_id, acl.READ)
            info = lora.info_of(row)
        self._refresh([info])
        return info

    def activate(self, adapter_id: str, *, user_id: str) -> LoraInfo:
        """Make an adapter that passed its gate the cube's active one for its base model."""
        home = self.home
        with home.write_lock, home.store.session() as s:
            row = lora.find(s, adapter_id)
            acl.require(s, row.cube_id, user_id, acl.WRITE)
            state = row.manifest.get("state")
            if state != "inactive":
                why = row.manifest.get("reason") or ""
                raise InvalidState(
                    f"adapter {row.sha256[:12]} is {state}{': ' + why if why else ''}; only an inactive adapter that passed its gate can be activated"
                )
            self._deactivate_others(s, row.cube_id or "", row.manifest.get("base", {}), row.sha256)
            row.manifest = {**row.manifest, "state": "active", "reason": None}
            info = lora.info_of(row)
        self._refresh([info])
        return info

    def deactivate(self, adapter_id: str, *, user_id: str) -> LoraInfo:
        home = self.home
        with home.write_lock, home.store.session() as s:
            row = lora.find(s, adapter_id)
            acl.require(s, row.cube_id, user_id, acl.WRITE)
            if row.manifest.get("state") == "active":
                row.manifest = {**row.manifest, "state": "inactive", "reason": "deactivated"}
            return lora.info_of(row)

    def drop(self, adapter_id: str, *, user_id: str) -> None:
        """Delete an adapter: its manifest row and its blob files."""
        home = self.home
        with home.write_lock, home.store.session() as s:
            row = lora.find(s, adapter_id)
            acl.require(s, row.cube_id, user_id, acl.WRITE)
            self._unlink(s, row)
            s.delete(row)
            event = _retired(row, home.clock(), user_id, "dropped")
        self._publish(event)

    # ------------------------------------------------------------------ chat
    def for_chat(
        self, cube_ids: Sequence[str], runtime: Runtime, limit: int
    ) -> builtins.list[tuple[LoraInfo, Any]]:
        """The active adapters of ``cube_ids`` (in order, one per cube, at most ``limit``)
        for this runtime's base model, loaded on the runtime."""
        if limit <= 0 or not runtime.supports_lora:
            return []
        fp = runtime.fingerprint.as_dict()
        found: builtins.list[LoraInfo] = []
        with self.home.store.session() as s:
            for cube_id in cube_ids:
                for row in lora.rows(s, cube_id):
                    m = row.manifest
                    if m.get("state") == "active" and same_base(m.get("base", {}), fp):
                        found.append(lora.info_of(row))
                        break
        self._refresh(found)
        out: builtins.list[tuple[LoraInfo, Any]] = []
        for info in found:
            if info.state != "active" or len(out) >= limit:
                continue
            path = self.blobs.path(info.id) if runtime.lora_format != "gguf" else (
                self.blobs.path(info.gguf["sha256"], ".gguf") if info.gguf else None)  # fmt: skip
            if path is None or not path.is_file():
                continue  # no file for this runtime (not exported, or gone): plaintext serves
            out.append((info, runtime.load_adapter(path)))
        return out

    # ------------------------------------------------------------------ erasure and changes
    def on_purge(self, event: Event) -> None:
        """Erasure: the subscriber to ``memory_purged`` (:mod:`memos.events`)."""
        self.invalidate(
            event.memory_ids, "a memory it was trained on was purged", purge=True, actor=event.actor
        )

    def invalidate(
        self, memory_ids: Sequence[str], reason: str, *, purge: bool = False, actor: str | None = None
    ) -> builtins.list[str]:
        """Adapters trained on one of ``memory_ids``: with ``purge``, *retired* (blob files
        deleted, purged ids scrubbed; published as ``artifact_retired``, by ``actor``);
        otherwise ``stale``. Both queue a retrain on the remaining memories."""
        wanted = set(memory_ids)
        if not wanted:
            return []
        home = self.home
        hit: builtins.list[str] = []
        retired: builtins.list[Event] = []
        at = home.clock()
        now = at.isoformat()
        with home.write_lock, home.store.session() as s:
            for row in s.scalars(select(BlobRow).where(BlobRow.kind == KIND)):
                m = dict(row.manifest)
                inside = {x["id"] for x in m.get("memories", [])}
                if not inside & wanted or m.get("state") == "retired":
                    continue
                hit.append(row.sha256)
                # a retrain takes every memory still there (an updated one in its new version)
                remaining = [x["id"] for x in m.get("memories", []) if not (purge and x["id"] in wanted)]
                if purge:
                    self._unlink(s, row)
                    retired.append(_retired(row, at, actor, reason))
                    m.update(state="retired", reason=reason, gguf=None)
                    m["memories"] = [x for x in m.get("memories", []) if x["id"] not in wanted]
                elif m.get("state") in ("active", "inactive"):
                    m.update(state="stale", reason=reason)
                if m.get("state") in ("retired", "stale"):
                    m["retrain"] = {"memory_ids": remaining, "queued_at": now, "reason": reason}
                    if self.queue_retrain is not None:  # the job commits with the mark, or neither
                        self.queue_retrain(s, row.sha256, row.cube_id)
                row.manifest = m
        self._publish(*retired)
        return hit

    def pending(self, cube_id: str, *, user_id: str) -> builtins.list[LoraInfo]:
        """Adapters with a queued retrain (retired or stale ones)."""
        return [i for i in self.list(cube_id, user_id=user_id) if i.retrain]

    def retrain(self, adapter_id: str, *, user_id: str, **kwargs: Any) -> LoraInfo | None:
        """Run a queued retrain: a new adapter on the remaining (still active) memories,
        same name and hyper-parameters. ``None`` when no memory is left to train on (the
        queue entry is cleared)."""
        info = self.show(adapter_id, user_id=user_id)
        if not info.retrain:
            raise InvalidState(f"adapter {info.id[:12]} has no queued retrain")
        home = self.home
        with home.store.session() as s:
            left = [
                mid for mid in info.retrain.get("memory_ids", [])
                if (r := s.get(MemoryRow, mid)) is not None and r.state == "active"
            ]  # fmt: skip
        if not left:
            with home.write_lock, home.store.session() as s:
                row = lora.find(s, info.id)
                row.manifest = {**row.manifest, "retrain": None}
            return None
        kwargs.setdefault(
            "config", TrainConfig(**{**info.hyper, "target_modules": tuple(info.hyper["target_modules"])})
        )
        kwargs.setdefault("name", info.name)
        return self.consolidate(info.cube_id, user_id=user_id, memory_ids=left, **kwargs)

    def _clear_queued(self, s: Session, cube_id: str, trained: Sequence[str]) -> None:
        """A new adapter over the same cube clears retrains queued for its memories."""
        covered = set(trained)
        for row in lora.rows(s, cube_id):
            q = row.manifest.get("retrain")
            if q and set(q.get("memory_ids", [])) <= covered:
                row.manifest = {**row.manifest, "retrain": None}

    def _refresh(self, infos: Sequence[LoraInfo]) -> None:
        """Active adapters whose memories changed or went since training become stale."""
        live = [i for i in infos if i.state in ("active", "inactive")]
        if not live:
            return
        ids = {m["id"] for i in live for m in i.memories}
        store = self.home.store
        with store.session() as s:
            current = {
                r.id: (r.state, r.version)
                for r in s.scalars(select(MemoryRow).where(MemoryRow.id.in_(list(ids))))
            }
        for info in live:
            for m in info.memories:
                state, version = current.get(m["id"], ("purged", None))
                if state != "active" or version != m["version"]:
                    why = (
                        f"memory {m['id']} is {state}"
                        if state != "active"
                        else f"memory {m['id']} changed (v{version})"
                    )
                    self.invalidate([m["id"]], why, purge=state == "purged")
                    with store.session() as s:
                        row = s.get(BlobRow, info.id)
                        fresh = lora.info_of(row) if row is not None else None
                    if fresh is not None:
                        info.state, info.reason, info.retrain = fresh.state, fresh.reason, fresh.retrain
                        info.memories, info.gguf = fresh.memories, fresh.gguf
                    break

    def delete_cube_blobs(self, s: Session, cube_id: str, actor: str | None) -> builtins.list[Event]:
        """Remove the cube's adapters (rows and files), inside the caller's transaction.
        Returns an ``artifact_retired`` per adapter not retired already, by ``actor``, for
        the caller to publish once it committed."""
        at = self.home.clock()
        retired = []
        for row in lora.rows(s, cube_id):
            if row.manifest.get("state") != "retired":
                retired.append(_retired(row, at, actor, "its cube was deleted"))
            self._unlink(s, row)
            s.delete(row)
        return retired

    # ------------------------------------------------------------------ helpers
    def _deactivate_others(self, s: Session, cube_id: str, base: Mapping[str, str], keep: str) -> None:
        for other in lora.rows(s, cube_id):
            if (
                other.sha256 != keep
                and other.manifest.get("state") == "active"
                and same_base(other.manifest.get("base", {}), base)
            ):
                other.manifest = {
                    **other.manifest,
                    "state": "inactive",
                    "reason": f"superseded by {keep[:12]}",
                }

    def _unlink(self, s: Session, row: BlobRow) -> None:
        """The adapter's files, once ``s`` commits (the row change that retires it)."""
        self.blobs.unlink_after_commit(s, row.sha256)
        gguf = row.manifest.get("gguf")
        if gguf:
            self.blobs.unlink_after_commit(s, gguf["sha256"], ".gguf")

    def _publish(self, *events: Event) -> None:
        """After the commit (:mod:`memos.events`)."""
        if events:
            self.home.events.publish(*events)


def _retired(row: BlobRow, at: datetime, actor: str | None, reason: str) -> Event:
    """``artifact_retired`` for the adapter of ``row``: its blob files are gone."""
    members = tuple(m["id"] for m in row.manifest.get("memories", []))
    details = {"kind": "lora", "id": row.sha256, "name": row.manifest.get("name", "default")}
    return Event(EventKind.artifact_retired, at, actor, row.cube_id, members, reason, details)
