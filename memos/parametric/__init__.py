"""Parametric memory: a cube's stable knowledge consolidated into a LoRA adapter.

``mos.parametric.consolidate(cube_id, user_id=…)`` turns a selection of the cube's
memories into training data (:mod:`memos.parametric.data`: statements, recall prompts and
questions in several phrasings, with a held-out split), trains a LoRA adapter with peft on
the transformers checkpoint of the base model (:mod:`memos.parametric.train`), evaluates
it and stores it.

**Gate.** An adapter becomes ``active`` only if, on the held-out questions training never
saw, its exact-match recall is higher than the base model's, and its perplexity on a fixed
general text (``general_text.txt``, shipped with the package) is at most
``1 + max_ppl_increase`` (5%) times the base model's. Otherwise it is kept as
``rejected`` with its numbers (no adapter is applied).

**Forward pass.** ``MemOS.chat`` applies the active adapters of the cubes it reads: on
the transformers runtime by forward hooks attached for that one generation (the weights
are never modified, so the base model is exactly itself afterwards); on llama.cpp as a
GGUF LoRA exported at consolidation (:mod:`memos.parametric.gguf_lora`) and set on the
context for the request. **Several cubes:** each cube has at most one active adapter per
base model (activating one deactivates the others); a chat over several cubes *stacks*
their active adapters (the low-rank deltas add up, each at its trained scale), up to
``chat.max_adapters`` in the order of ``cube_ids``. A KV prefix (activation memory) is
computed without adapters, so a chat that applies adapters does not use one.

**Erasure.** Purging a memory an adapter was trained on *retires* the adapter: both blob
files are deleted, the manifest keeps why, and a retrain without the purged memories is
queued (``pending`` / ``retrain``). Updating or deleting such a memory marks the adapter
``stale`` (not applied) and queues a retrain too; the blob stays until then.

Storage: ``$MEMOS_HOME/blobs/sha256/<2>/<sha>.safetensors`` (peft tensor names and the
base fingerprint in its metadata) and ``<sha>.gguf``; the manifest is a ``blobs`` row
with ``kind = "parametric"``. No pickle anywhere.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select

from memos import acl
from memos.errors import FingerprintMismatch, InvalidInput, InvalidState, NotFound
from memos.events import Event
from memos.parametric.data import Example, build_examples, data_hash
from memos.parametric.train import EpochReport, TrainConfig
from memos.protocols import Runtime
from memos.storage.relational.models import BlobRow, MemoryRow

if TYPE_CHECKING:
    from memos.core import MemOS

KIND = "parametric"
FORMAT = "memos-lora/peft/1"
GENERAL_TEXT = Path(__file__).with_name("general_text.txt")
CONSOLIDATE_TYPES = ("fact", "profile", "preference", "procedure")
State = Literal["active", "inactive", "rejected", "stale", "retired"]

__all__ = ["LoraInfo", "Evaluation", "ParametricMemory", "TrainConfig", "KIND", "gate"]


class Evaluation(BaseModel):
    recall_base: float = Field(description="held-out exact-match recall of the base model")
    recall_adapter: float = Field(description="the same with the adapter")
    recall_seen_adapter: float = Field(
        description="recall on one trained phrasing per fact, with the adapter"
    )
    ppl_base: float = Field(description="perplexity of the general text, base model")
    ppl_adapter: float
    ppl_ratio: float
    n_heldout: int
    passed: bool
    reasons: list[str] = Field(default_factory=list, description="why it failed the gate")


class LoraInfo(BaseModel):
    """The manifest of one parametric-memory adapter."""

    id: str = Field(description="sha256 of the adapter's safetensors blob")
    cube_id: str
    name: str
    state: State
    reason: str | None = None
    base: dict[str, str] = Field(description="the base model: runtime fingerprint it was trained from")
    memories: list[dict[str, Any]] = Field(description="[{id, version}] it was trained on")
    hyper: dict[str, Any]
    data_hash: str
    n_examples: dict[str, int]
    evaluation: Evaluation | None
    epochs: list[dict[str, Any]]
    train_s: float
    bytes: int
    gguf: dict[str, Any] | None = Field(None, description="{sha256, bytes} of the GGUF LoRA for llama.cpp")
    created_at: datetime
    retrain: dict[str, Any] | None = Field(
        None, description="a queued retrain: {memory_ids, queued_at, reason}"
    )

    @property
    def memory_ids(self) -> list[str]:
        return [m["id"] for m in self.memories]


ProgressFn = Callable[[int, int, float], None]


class ParametricMemory:
    """``mos.parametric``: consolidate, list, show, activate, deactivate, drop, retrain."""

    def __init__(self, mos: MemOS) -> None:
        self.mos = mos
        self._lock = threading.Lock()
        self._ppl_base: dict[str, float] = {}

    # ------------------------------------------------------------------ paths
    def blob_path(self, sha: str, suffix: str = ".safetensors") -> Path:
        return self.mos.settings.home / "blobs" / "sha256" / sha[:2] / f"{sha}{suffix}"

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
        (``active``, or ``inactive`` with ``activate=False``) or was ``rejected``.

        ``cancel`` (an Event set from another thread) stops training between steps with
        :class:`~memos.errors.Cancelled`; nothing is stored then."""
        from memos.parametric.train import Trainer

        mos = self.mos
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise InvalidInput("name must be a non-empty string of at most 64 characters")
        cfg = self._config(config)
        mos.access.flush()  # the selectors order by hits
        with mos.store.session() as s:
            acl.require(s, cube_id, user_id, acl.WRITE)
            rows = self._choose(s, cube_id, memory_ids, top_n)
            chosen = [(r.id, r.text, r.version) for r in rows]
        owner_name = mos.get_user(user_id).name  # its own session: not inside the write one above
        if not chosen:
            raise InvalidInput(
                "no memories to consolidate (the cube has no active facts, profile or preferences)"
            )
        rt = runtime if runtime is not None else self._train_runtime(model)
        if not getattr(rt, "supports_training", False):
            raise InvalidInput(
                "consolidation trains on the transformers runtime (a local checkpoint of the base model)"
            )
        system_prompt = mos.settings.chat.system_prompt.replace("{user}", owner_name)
        examples = build_examples([(mid, text) for mid, text, _ in chosen], owner_name, seed=cfg.seed)
        trainer = Trainer(rt, cfg, system_prompt, cancel)
        result, model_obj = trainer.train(examples, progress, on_epoch)
        evaluation = self._evaluate(rt, model_obj, result.state, examples, system_prompt, cfg)
        del model_obj
        state: State = ("active" if activate else "inactive") if evaluation.passed else "rejected"
        data = self._serialize(result.state, cfg, rt)
        sha = hashlib.sha256(data).hexdigest()
        written = [self._write(sha, ".safetensors", data)]
        gguf: dict[str, Any] | None = None
        try:
            if export_gguf and evaluation.passed:
                gguf = self._export_gguf(result.state, cfg, rt)
                written.append(self.blob_path(gguf["sha256"], ".gguf"))
            manifest = {
                "name": name,
                "state": state,
                "reason": None if evaluation.passed else "; ".join(evaluation.reasons),
                "base": rt.fingerprint.as_dict(),
                "memories": [{"id": mid, "version": v} for mid, _, v in chosen],
                "hyper": cfg.to_dict(),
                "data_hash": data_hash(examples),
                "n_examples": {
                    "train": sum(e.split == "train" for e in examples),
                    "heldout": sum(e.split == "heldout" for e in examples),
                },
                "evaluation": evaluation.model_dump(),
                "epochs": [vars(e) for e in result.epochs],
                "best_epoch": result.best_epoch,
                "train_s": round(result.train_s, 1),
                "gguf": gguf,
                "system_prompt": system_prompt,
            }
            now = mos.clock()
            with mos.write_lock, mos.store.session() as s:
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
        return self._info(sha, cube_id, len(data), now, manifest)

    def _config(self, config: TrainConfig | Mapping[str, Any] | None) -> TrainConfig:
        if isinstance(config, TrainConfig):
            return config
        p = self.mos.settings.parametric
        defaults = {"rank": p.rank, "alpha": p.alpha, "lr": p.lr, "epochs": p.epochs, "batch_size": p.batch_size,
                    "seed": p.seed}  # fmt: skip
        try:
            cfg = TrainConfig(**{**defaults, **dict(config or {})})
        except TypeError as exc:
            raise InvalidInput(f"unknown training option: {exc}") from exc
        if cfg.rank < 1 or cfg.epochs < 1 or cfg.batch_size < 1 or not 0 < cfg.lr < 1:
            raise InvalidInput("rank, epochs and batch_size must be positive and lr in (0, 1)")
        return cfg

    def _choose(self, s: Any, cube_id: str, memory_ids: Sequence[str] | None, top_n: int) -> list[MemoryRow]:
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

    def _train_runtime(self, model: str | None) -> Any:
        """The transformers runtime of the base model (training needs its checkpoint)."""
        mos = self.mos
        wanted = model or mos.settings.runtime.model
        rt = mos.runtime("transformers", model=wanted) if model else mos.runtime("transformers")
        return rt

    def _evaluate(self, rt: Any, model: Any, state: dict[str, Any], examples: Sequence[Example],
                  system_prompt: str, cfg: TrainConfig) -> Evaluation:  # fmt: skip
        from peft import set_peft_model_state_dict

        from memos.parametric.train import contains, generate, perplexity

        settings = self.mos.settings.parametric
        device = next(model.parameters()).device.type
        set_peft_model_state_dict(model, state)
        heldout = [e for e in examples if e.split == "heldout" and e.obj]
        seen: dict[str, Example] = {}
        for e in examples:
            if e.split == "train" and e.form == "question" and e.obj:
                seen.setdefault(e.memory_id, e)
        text = GENERAL_TEXT.read_text(encoding="utf-8")

        def recall(items: Sequence[Example]) -> float:
            if not items:
                return 0.0
            answers = generate(
                model, rt, [e.prompt for e in items], system_prompt, cfg.max_new_tokens, device
            )
            return sum(contains(a, e.obj) for a, e in zip(answers, items, strict=True)) / len(items)

        r_adapter, r_seen = recall(heldout), recall(list(seen.values()))
        p_adapter = perplexity(model, rt, text, device)
        with model.disable_adapter():
            r_base = recall(heldout)
            p_base = perplexity(model, rt, text, device)
        ratio = p_adapter / p_base
        reasons = gate(r_base, r_adapter, len(heldout), ratio, settings.max_ppl_increase)
        return Evaluation(
            recall_base=round(r_base, 4), recall_adapter=round(r_adapter, 4), recall_seen_adapter=round(r_seen, 4), ppl_base=round(p_base, 4), ppl_adapter=round(p_adapter, 4),
            ppl_ratio=round(ratio, 4), n_heldout=len(heldout), passed=not reasons, reasons=reasons,
        )  # fmt: skip

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
        with tempfile.TemporaryDirectory(dir=self.mos.settings.home) as tmp:
            path = export_gguf_lora(state, config, cfg.alpha, Path(tmp) / "adapter.gguf")
            data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        self._write(sha, ".gguf", data)
        return {"sha256": sha, "bytes": len(data)}

    def _write(self, sha: str, suffix: str, data: bytes) -> Path:
        from memos.activation import write_blob

        return write_blob(self.blob_path(sha, suffix), data)

    # ------------------------------------------------------------------ read and manage
    def list(self, cube_id: str, *, user_id: str) -> builtins.list[LoraInfo]:
        """The cube's adapters (every state), newest first."""

        mos = self.mos
        with mos.store.session() as s:
            acl.require(s, cube_id, user_id, acl.READ)
            out = [self._info_row(r) for r in self._rows(s, cube_id)]
        self._refresh(out)
        return sorted(out, key=lambda i: i.created_at, reverse=True)

    def show(self, adapter_id: str, *, user_id: str) -> LoraInfo:

        mos = self.mos
        with mos.store.session() as s:
            row = self._row(s, adapter_id)
            acl.require(s, row.cube_id, user_id, acl.READ)
            info = self._info_row(row)
        self._refresh([info])
        return info

    def activate(self, adapter_id: str, *, user_id: str) -> LoraInfo:
        """Make an adapter that passed its gate the cube's active one for its base model."""

        mos = self.mos
        with mos.write_lock, mos.store.session() as s:
            row = self._row(s, adapter_id)
            acl.require(s, row.cube_id, user_id, acl.WRITE)
            state = row.manifest.get("state")
            if state != "inactive":
                why = row.manifest.get("reason") or ""
                raise InvalidState(
                    f"adapter {row.sha256[:12]} is {state}{': ' + why if why else ''}; only an inactive adapter that passed its gate can be activated"
                )
            self._deactivate_others(s, row.cube_id or "", row.manifest.get("base", {}), row.sha256)
            row.manifest = {**row.manifest, "state": "active", "reason": None}
            info = self._info_row(row)
        self._refresh([info])
        return info

    def deactivate(self, adapter_id: str, *, user_id: str) -> LoraInfo:

        mos = self.mos
        with mos.write_lock, mos.store.session() as s:
            row = self._row(s, adapter_id)
            acl.require(s, row.cube_id, user_id, acl.WRITE)
            if row.manifest.get("state") == "active":
                row.manifest = {**row.manifest, "state": "inactive", "reason": "deactivated"}
            return self._info_row(row)

    def drop(self, adapter_id: str, *, user_id: str) -> None:
        """Delete an adapter: its manifest row and its blob files."""

        mos = self.mos
        with mos.write_lock, mos.store.session() as s:
            row = self._row(s, adapter_id)
            acl.require(s, row.cube_id, user_id, acl.WRITE)
            self._unlink(row)
            s.delete(row)

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
        with self.mos.store.session() as s:
            for cube_id in cube_ids:
                for row in self._rows(s, cube_id):
                    m = row.manifest
                    if m.get("state") == "active" and _same_base(m.get("base", {}), fp):
                        found.append(self._info_row(row))
                        break
        self._refresh(found)
        out: builtins.list[tuple[LoraInfo, Any]] = []
        for info in found:
            if info.state != "active" or len(out) >= limit:
                continue
            path = self.blob_path(info.id) if runtime.lora_format != "gguf" else (
                self.blob_path(info.gguf["sha256"], ".gguf") if info.gguf else None)  # fmt: skip
            if path is None or not path.is_file():
                continue  # no file for this runtime (not exported, or gone): plaintext serves
            out.append((info, runtime.load_adapter(path)))
        return out

    # ------------------------------------------------------------------ erasure and changes
    def on_purge(self, event: Event) -> None:
        """Erasure: the subscriber to ``memory_purged`` (:mod:`memos.events`)."""
        self.invalidate(event.memory_ids, "a memory it was trained on was purged", purge=True)

    def invalidate(
        self, memory_ids: Sequence[str], reason: str, *, purge: bool = False
    ) -> builtins.list[str]:
        """Adapters trained on one of ``memory_ids``: with ``purge``, *retired* (blob files
        deleted, purged ids scrubbed); otherwise ``stale``. Both queue a retrain on the
        remaining memories."""
        wanted = set(memory_ids)
        if not wanted:
            return []
        mos = self.mos
        hit: builtins.list[str] = []
        now = mos.clock().isoformat()
        with mos.write_lock, mos.store.session() as s:
            for row in s.scalars(select(BlobRow).where(BlobRow.kind == KIND)):
                m = dict(row.manifest)
                inside = {x["id"] for x in m.get("memories", [])}
                if not inside & wanted or m.get("state") == "retired":
                    continue
                hit.append(row.sha256)
                # a retrain takes every memory still there (an updated one in its new version)
                remaining = [x["id"] for x in m.get("memories", []) if not (purge and x["id"] in wanted)]
                if purge:
                    self._unlink(row)
                    m.update(state="retired", reason=reason, gguf=None)
                    m["memories"] = [x for x in m.get("memories", []) if x["id"] not in wanted]
                elif m.get("state") in ("active", "inactive"):
                    m.update(state="stale", reason=reason)
                if m.get("state") in ("retired", "stale"):
                    m["retrain"] = {"memory_ids": remaining, "queued_at": now, "reason": reason}
                row.manifest = m
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
        with self.mos.store.session() as s:
            left = [
                mid for mid in info.retrain.get("memory_ids", [])
                if (r := s.get(MemoryRow, mid)) is not None and r.state == "active"
            ]  # fmt: skip
        if not left:
            with self.mos.write_lock, self.mos.store.session() as s:
                row = self._row(s, info.id)
                row.manifest = {**row.manifest, "retrain": None}
            return None
        kwargs.setdefault(
            "config", TrainConfig(**{**info.hyper, "target_modules": tuple(info.hyper["target_modules"])})
        )
        kwargs.setdefault("name", info.name)
        return self.consolidate(info.cube_id, user_id=user_id, memory_ids=left, **kwargs)

    def _clear_queued(self, s: Any, cube_id: str, trained: Sequence[str]) -> None:
        """A new adapter over the same cube clears retrains queued for its memories."""
        covered = set(trained)
        for row in self._rows(s, cube_id):
            q = row.manifest.get("retrain")
            if q and set(q.get("memory_ids", [])) <= covered:
                row.manifest = {**row.manifest, "retrain": None}

    def _refresh(self, infos: Sequence[LoraInfo]) -> None:
        """Active adapters whose memories changed or went since training become stale."""
        live = [i for i in infos if i.state in ("active", "inactive")]
        if not live:
            return
        ids = {m["id"] for i in live for m in i.memories}
        with self.mos.store.session() as s:
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
                    with self.mos.store.session() as s:
                        row = s.get(BlobRow, info.id)
                        fresh = self._info_row(row) if row is not None else None
                    if fresh is not None:
                        info.state, info.reason, info.retrain = fresh.state, fresh.reason, fresh.retrain
                        info.memories, info.gguf = fresh.memories, fresh.gguf
                    break

    def delete_cube_blobs(self, s: Any, cube_id: str) -> None:
        """Remove the cube's adapters (rows and files), inside the caller's transaction."""
        for row in self._rows(s, cube_id):
            self._unlink(row)
            s.delete(row)

    # ------------------------------------------------------------------ helpers
    def _deactivate_others(self, s: Any, cube_id: str, base: Mapping[str, str], keep: str) -> None:
        for other in self._rows(s, cube_id):
            if (
                other.sha256 != keep
                and other.manifest.get("state") == "active"
                and _same_base(other.manifest.get("base", {}), base)
            ):
                other.manifest = {
                    **other.manifest,
                    "state": "inactive",
                    "reason": f"superseded by {keep[:12]}",
                }

    def _unlink(self, row: BlobRow) -> None:
        self.blob_path(row.sha256).unlink(missing_ok=True)
        gguf = row.manifest.get("gguf")
        if gguf:
            self.blob_path(gguf["sha256"], ".gguf").unlink(missing_ok=True)

    @staticmethod
    def _rows(s: Any, cube_id: str) -> builtins.list[BlobRow]:
        q = (
            select(BlobRow)
            .where(BlobRow.kind == KIND, BlobRow.cube_id == cube_id)
            .order_by(BlobRow.created_at.desc())
        )
        return list(s.scalars(q))

    @staticmethod
    def _row(s: Any, adapter_id: str) -> BlobRow:
        if not isinstance(adapter_id, str) or len(adapter_id) < 6:
            raise InvalidInput("give an adapter id (at least 6 characters of it)")
        rows = list(
            s.scalars(
                select(BlobRow).where(BlobRow.kind == KIND, BlobRow.sha256.startswith(adapter_id.lower()))
            )
        )
        if len(rows) != 1:
            raise NotFound(
                f"no adapter {adapter_id!r}" if not rows else f"{adapter_id!r} is ambiguous; give more of it"
            )
        return rows[0]

    def _info_row(self, row: BlobRow) -> LoraInfo:
        return self._info(row.sha256, row.cube_id or "", row.size, row.created_at, row.manifest)

    @staticmethod
    def _info(sha: str, cube_id: str, size: int, created: datetime, m: Mapping[str, Any]) -> LoraInfo:
        ev = m.get("evaluation")
        return LoraInfo(
            id=sha, cube_id=cube_id, name=m.get("name", "default"), state=m.get("state", "inactive"),
            reason=m.get("reason"), base=dict(m.get("base", {})), memories=list(m.get("memories", [])),
            hyper=dict(m.get("hyper", {})), data_hash=m.get("data_hash", ""), n_examples=dict(m.get("n_examples", {})),
            evaluation=Evaluation(**ev) if ev else None, epochs=list(m.get("epochs", [])),
            train_s=float(m.get("train_s", 0.0)), bytes=size, gguf=m.get("gguf"), created_at=created,
            retrain=m.get("retrain"),
        )  # fmt: skip


def gate(
    recall_base: float, recall_adapter: float, n_heldout: int, ppl_ratio: float, max_ppl_increase: float
) -> list[str]:
    """Why an adapter fails the gate (empty: it passes)."""
    reasons = []
    if n_heldout == 0:
        reasons.append("no held-out questions: none of the memories reads as a fact the gate can check")
    elif recall_adapter <= recall_base:
        reasons.append(f"held-out recall did not improve ({recall_adapter:.2f} vs base {recall_base:.2f})")
    if not ppl_ratio <= 1 + max_ppl_increase:
        reasons.append(
            f"general-text perplexity rose {100 * (ppl_ratio - 1):.1f}% (limit {100 * max_ppl_increase:.0f}%)"
        )
    return reasons


def _same_base(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Same model weights and tokenizer (the runtime and its dtype may differ)."""
    return (
        bool(a)
        and a.get("model_id") == b.get("model_id")
        and a.get("weights_sha256") == b.get("weights_sha256")
    )


def check_base(info: LoraInfo, runtime: Runtime) -> None:
    if not _same_base(info.base, runtime.fingerprint.as_dict()):
        raise FingerprintMismatch(
            f"adapter {info.id[:12]} was trained for {info.base.get('model_id')}, not {runtime.fingerprint.model_id}"
        )
