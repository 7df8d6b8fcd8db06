"""``ActivationMemory``: compile, list, show, drop, load, and the chat's lookup.

Built with the home and a way to get a runtime; see :mod:`memos.activation` for the rules
it keeps (fingerprint, joint compilation, copy-on-use, invalidation).
"""

from __future__ import annotations

import builtins
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from memos import acl
from memos.activation import manifest as mf
from memos.activation.manifest import KIND, ActivationInfo, Segment
from memos.activation.text import memory_text, prefix_text
from memos.blobs import BlobStore
from memos.errors import FingerprintMismatch, InvalidInput, InvalidState, NotFound
from memos.events import Event, EventKind
from memos.home import Home
from memos.plaintext.convert import memory_from_row
from memos.protocols import KVPrefix, Runtime
from memos.runtime import sha256_file
from memos.storage.relational.models import BlobRow, MemoryRow
from memos.types import MemoryItem

#: memory types offered to the selector's segments
PROFILE_TYPES = ("profile", "preference")
HOT_TYPES = ("fact", "procedure")


class ActivationMemory:
    """``mos.activation``: compile, list, show, drop, and the chat's lookup.

    ``runtimes(name=None, **overrides)`` returns the loaded runtime ``name`` (default: the
    configured one), as ``MemOS.runtime`` does."""

    def __init__(self, home: Home, *, runtimes: Callable[..., Runtime]) -> None:
        self.home = home
        self.runtimes = runtimes
        #: the active adapters a chat over ``(cube ids, runtime, at most)`` applies, loaded on
        #: the runtime, as ``[(info with .id, adapter)]`` (:meth:`ParametricMemory.for_chat`,
        #: wired by the kernel); without it every prefix is the base model's
        self.adapters: Callable[[Sequence[str], Runtime, int], Sequence[tuple[Any, Any]]] | None = None
        self.blobs = BlobStore(home.settings.home)
        self._loaded: OrderedDict[tuple[str, str], KVPrefix] = OrderedDict()
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    def blob_path(self, sha: str) -> Path:
        return self.blobs.path(sha)

    # ------------------------------------------------------------------ compile
    def compile(
        self,
        cube_id: str,
        *,
        user_id: str,
        memory_ids: Sequence[str] | None = None,
        segments: Mapping[str, Sequence[str]] | None = None,
        top_n: int = 32,
        token_budget: int = 1024,
        runtime: str | Runtime | None = None,
        name: str = "default",
        fit: bool = False,
        actor: str | None = None,
        adapters: Sequence[str] | None = None,
    ) -> ActivationInfo:
        """Compile memories into a KV prefix for ``runtime`` (default: the configured one).

        Choose the memories with ``segments`` (``{"profile": [ids], "hot": [ids]}``, in
        order), ``memory_ids`` (one segment), or neither: the selector takes a
        ``profile`` segment (profile and preference memories) and a ``hot`` segment (the
        top ``top_n`` facts by importance, then use, then recency), within
        ``token_budget`` prefix tokens. Chosen memories that do not fit are an error,
        unless ``fit``: then those from the first that does not fit on are left out.

        A newer compile under the same ``name`` for the same model replaces the older one
        atomically: the new blob is written first, then one transaction swaps the manifest
        rows, and only after it committed are the old blob files deleted. A chat that
        looked up the old prefix just before loads the new one instead (:meth:`for_chat`);
        one that holds the old prefix already finishes with it (a loaded prefix is
        memory-mapped or in memory: deleting its file does not touch it). ``actor`` (a
        policy) is who the events name, ``user_id`` by default.

        The prefill runs under LoRA adapters, recorded in the manifest, so that a chat that
        applies them can start from it (a prefix serves only a chat applying exactly the
        adapters it was computed under): by default (``adapters=None``) the cube's active
        adapters for this model — those a chat on the cube applies, none on a runtime that
        computes prefixes for the base model only; ``[]``: none (for chats without them,
        ``parametric=False``); a list of adapter ids: exactly those, which must be the cube's
        active ones. A prefix computed under an
        adapter that is later superseded, deactivated or made stale becomes stale; one
        whose adapter is retired (a memory it was trained on purged) is purged with it.
        """
        home = self.home
        rt = self._runtime(runtime)
        if (
            isinstance(token_budget, bool)
            or not isinstance(token_budget, int)
            or not 16 <= token_budget < rt.context_length
        ):
            raise InvalidInput(f"token_budget must be an integer from 16 to {rt.context_length - 1}")
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise InvalidInput("name must be a non-empty string of at most 64 characters")
        if adapters is not None and (
            isinstance(adapters, str) or not all(isinstance(a, str) for a in adapters)
        ):
            raise InvalidInput("adapters must be a list of adapter ids (or None: the cube's active ones)")
        home.access.flush()  # the selectors order by hits
        with home.store.session() as s:
            acl.require(s, cube_id, user_id, acl.WRITE)
            chosen = self._choose(s, cube_id, memory_ids, segments, top_n)
            owner_name = acl.user(s, user_id).name
        under = self._adapters_for(cube_id, rt, adapters)
        system_prompt = home.settings.chat.system_prompt.replace("{user}", owner_name)
        # fit the budget: whole memories, in order, while the prefix stays within it
        lines: list[str] = []
        kept: list[tuple[str, MemoryItem]] = []
        for seg, item in chosen:
            trial = [*lines, memory_text(item)]
            if rt.count_tokens(prefix_text(rt, system_prompt, trial)) > token_budget:
                if not kept and memory_ids is not None and not fit:
                    raise InvalidInput(f"memory {item.id} alone does not fit a {token_budget}-token prefix")
                if fit:
                    break
                if memory_ids is not None or segments is not None:
                    raise InvalidInput(
                        f"the chosen memories do not fit a {token_budget}-token prefix; raise token_budget"
                    )
                break
            lines, kept = trial, [*kept, (seg, item)]
        if not kept and fit and chosen:
            raise InvalidInput(f"memory {chosen[0][1].id} alone does not fit a {token_budget}-token prefix")
        if not kept:
            raise InvalidInput("no memories to compile (the cube has no active memories of the chosen kinds)")
        text = prefix_text(rt, system_prompt, lines)
        ids = rt.tokenize(text)
        # segment spans: the tokens of the text up to the end of each segment's last line
        spans: list[Segment] = []
        start = len(rt.tokenize(prefix_text(rt, system_prompt, [])))
        for seg in dict.fromkeys(sg for sg, _ in kept):
            upto = max(i for i, (sg, _) in enumerate(kept) if sg == seg) + 1
            end = len(rt.tokenize(prefix_text(rt, system_prompt, lines[:upto])))
            spans.append(
                Segment(name=seg, start=start, end=end, memory_ids=[m.id for sg, m in kept if sg == seg])
            )
            start = end
        t0 = time.perf_counter()
        data = rt.build_prefix(ids, [a for _, a in under]) if under else rt.build_prefix(ids)
        compile_ms = (time.perf_counter() - t0) * 1000
        sha = self.blobs.write(data)
        now = home.clock()
        fp = rt.fingerprint
        manifest = {
            "name": name,
            "state": "ready",
            "stale_reason": None,
            "fingerprint": fp.as_dict(),
            "fingerprint_key": fp.key,
            "memories": [{"id": m.id, "version": m.version} for _, m in kept],
            "adapters": [aid for aid, _ in under],
            "segments": [sp.model_dump() for sp in spans],
            "token_ids": ids,
            "text": text,
            "lines": lines,
            "system_prompt": system_prompt,
            "n_tokens": len(ids),
            "compile_ms": round(compile_ms, 1),
        }
        replaced: list[BlobRow] = []
        with home.write_lock, home.store.session() as s:
            for old in mf.rows(s, cube_id):
                if (
                    old.manifest.get("name") == name
                    and old.manifest.get("fingerprint_key") == fp.key
                    and old.sha256 != sha
                ):
                    replaced.append(old)
                    s.delete(old)
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
            info = mf.info(sha, cube_id, len(data), now, manifest)
        for old in replaced:  # committed: no row names them any more
            self._forget(old.sha256)
        who = actor or user_id
        self._publish(
            *(_retired(old, now, who, f"replaced by {sha[:12]}") for old in replaced),
            Event(EventKind.artifact_compiled, now, who, cube_id, tuple(info.memory_ids),
                  details={"kind": "kv_prefix", "id": sha, "name": name}),
        )  # fmt: skip
        return info

    def _adapters_for(
        self, cube_id: str, rt: Runtime, wanted: Sequence[str] | None
    ) -> builtins.list[tuple[str, Any]]:
        """The adapters to compile under, as ``(id, loaded)``: see :meth:`compile`."""
        chat = self.home.settings.chat
        active: builtins.list[tuple[str, Any]] = []
        if self.adapters is not None and chat.parametric and rt.supports_lora:
            active = [(info.id, loaded) for info, loaded in self.adapters([cube_id], rt, chat.max_adapters)]
        capable = getattr(rt, "supports_kv_prefix_lora", False)
        if wanted is None:
            return active if capable else []
        ids = builtins.list(wanted)
        if ids and sorted(ids) != sorted(aid for aid, _ in active):
            have = ", ".join(aid[:12] for aid, _ in active) or "none"
            raise InvalidState(
                f"a prefix is compiled under the cube's active adapters for {rt.fingerprint.model_id} "
                f"({have}), not {', '.join(i[:12] for i in ids) or 'none'}: activate them first, "
                "or leave adapters out"
            )
        if ids and not capable:
            raise InvalidState(f"the {rt.name} runtime computes a KV prefix without adapters only")
        loaded = dict(active)
        return [(aid, loaded[aid]) for aid in ids]

    def _choose(
        self,
        s: Session,
        cube_id: str,
        memory_ids: Sequence[str] | None,
        segments: Mapping[str, Sequence[str]] | None,
        top_n: int,
    ) -> list[tuple[str, MemoryItem]]:
        if memory_ids is not None and segments is not None:
            raise InvalidInput("give memory_ids or segments, not both")
        if memory_ids is not None:
            segments = {"explicit": list(memory_ids)}
        if segments is not None:
            out: list[tuple[str, MemoryItem]] = []
            seen: set[str] = set()
            for seg, ids in segments.items():
                for mid in ids:
                    row = s.get(MemoryRow, mid)
                    if row is None or row.cube_id != cube_id:
                        raise NotFound(f"no memory {mid!r} in cube {cube_id!r}")
                    if row.state != "active":
                        raise InvalidState(f"memory {mid} is {row.state}; only active memories are compiled")
                    if mid not in seen:
                        seen.add(mid)
                        out.append((seg, memory_from_row(row)))
            return out
        if isinstance(top_n, bool) or not isinstance(top_n, int) or not 1 <= top_n <= 1000:
            raise InvalidInput("top_n must be an integer from 1 to 1000")
        base = select(MemoryRow).where(MemoryRow.cube_id == cube_id, MemoryRow.state == "active")
        order = (MemoryRow.importance.desc(), MemoryRow.hits.desc(), MemoryRow.recorded_at.desc())
        profile = s.scalars(base.where(MemoryRow.type.in_(PROFILE_TYPES)).order_by(*order).limit(top_n))
        hot = s.scalars(base.where(MemoryRow.type.in_(HOT_TYPES)).order_by(*order).limit(top_n))
        return [("profile", memory_from_row(r)) for r in profile] + [("hot", memory_from_row(r)) for r in hot]

    # ------------------------------------------------------------------ read
    def list(self, cube_id: str, *, user_id: str) -> builtins.list[ActivationInfo]:
        """The cube's compiled prefixes (stale ones included, marked), newest first."""
        with self.home.store.session() as s:
            acl.require(s, cube_id, user_id, acl.READ)
            out = [mf.info_of(r, cube_id) for r in mf.rows(s, cube_id)]
        self._refresh(out)
        return sorted(out, key=lambda i: i.created_at, reverse=True)

    def show(self, kv_id: str, *, user_id: str) -> ActivationInfo:
        with self.home.store.session() as s:
            row = mf.find(s, kv_id)
            acl.require(s, row.cube_id, user_id, acl.READ)
            info = mf.info_of(row)
        self._refresh([info])
        return info

    def drop(self, kv_id: str, *, user_id: str) -> None:
        """Delete a compiled prefix: its manifest row and its blob file."""
        home = self.home
        with home.write_lock, home.store.session() as s:
            row = mf.find(s, kv_id)
            acl.require(s, row.cube_id, user_id, acl.WRITE)
            self._delete_row(s, row)
            event = _retired(row, home.clock(), user_id, "dropped")
        self._publish(event)

    def load(self, kv_id: str, runtime: Runtime) -> tuple[ActivationInfo, KVPrefix]:
        """Load a ready prefix for ``runtime``; refuses another fingerprint and stale prefixes."""
        with self.home.store.session() as s:
            row = mf.find(s, kv_id)
            info = mf.info_of(row)
            token_ids = list(row.manifest.get("token_ids") or [])
        self._refresh([info])
        if info.state != "ready":
            raise InvalidState(
                f"activation memory {kv_id[:12]} is {info.state}: {info.stale_reason}; recompile it"
            )
        if info.fingerprint != runtime.fingerprint.as_dict():
            raise FingerprintMismatch(
                f"activation memory {kv_id[:12]} was compiled for {info.fingerprint['runtime']}:"
                f"{info.fingerprint['model_id']} ({info.fingerprint['dtype']}), not for "
                f"{runtime.fingerprint.runtime}:{runtime.fingerprint.model_id} ({runtime.fingerprint.dtype})"
            )
        key = (info.id, runtime.fingerprint.key)
        with self._lock:
            cached = self._loaded.get(key)
            if cached is not None:
                self._loaded.move_to_end(key)
                return info, cached
        path = self.blobs.path(info.id)
        if not path.is_file():
            self.invalidate(info.memory_ids, "the blob file is missing")
            raise InvalidState(f"the blob file of activation memory {kv_id[:12]} is missing; recompile it")
        if info.id not in self._verified:  # once per process: the file is content-addressed
            if sha256_file(path) != info.id:
                raise InvalidState(f"the blob of activation memory {kv_id[:12]} is corrupt (sha256 mismatch)")
            self._verified.add(info.id)
        prefix = runtime.load_prefix(path, token_ids)  # memory-mapped where the runtime can
        with self._lock:
            self._loaded[key] = prefix
            while len(self._loaded) > 4:
                self._loaded.popitem(last=False)
        return info, prefix

    def for_chat(
        self, cube_id: str, runtime: Runtime, adapters: Sequence[str] = ()
    ) -> tuple[ActivationInfo, KVPrefix, str, builtins.list[str]] | None:
        """The newest ready prefix of ``cube_id`` for this runtime's fingerprint computed
        under exactly ``adapters`` (the ids of those the chat applies, in any order), with
        its text and memory lines."""
        return self.choose(cube_id, runtime, adapters)[0]

    def choose(
        self, cube_id: str, runtime: Runtime, adapters: Sequence[str] = (), *, retry: bool = True
    ) -> tuple[
        tuple[ActivationInfo, KVPrefix, str, builtins.list[str]] | None, tuple[ActivationInfo, str] | None
    ]:
        """What a chat applying ``adapters`` starts from, in one read of the manifests: the
        prefix :meth:`for_chat` returns, or — when there is none — the newest ready prefix
        for this runtime that it cannot use (computed under other adapters) and why."""
        if not runtime.supports_kv_prefix:
            return None, None
        key = runtime.fingerprint.key
        wanted = sorted(adapters)
        capable = not adapters or getattr(runtime, "supports_kv_prefix_lora", False)
        with self.home.store.session() as s:
            rows = [r for r in mf.rows(s, cube_id) if r.manifest.get("fingerprint_key") == key]
            rows.sort(key=lambda r: r.created_at, reverse=True)
            infos = [
                (mf.info_of(r, cube_id), r.manifest.get("text", ""), list(r.manifest.get("lines", [])))
                for r in rows
            ]
        self._refresh([i for i, _, _ in infos])
        for info, text, lines in infos:
            if capable and info.state == "ready" and sorted(info.adapters) == wanted:
                try:
                    info, prefix = self.load(info.id, runtime)
                except InvalidState:  # its file went missing: now stale; plaintext memory serves
                    continue
                except NotFound:  # replaced by a compile since the lookup: look again, once
                    return self.choose(cube_id, runtime, adapters, retry=False) if retry else (None, None)
                return (info, prefix, str(text), lines), None
        other = next((i for i, _, _ in infos if i.state == "ready" and sorted(i.adapters) != wanted), None)
        if other is None:
            return None, None

        def under(ids: Sequence[str]) -> str:
            return "adapters " + ", ".join(i[:12] for i in ids) if ids else "no adapters"

        if not capable:
            return None, (other, f"the {runtime.name} runtime uses a KV prefix without adapters only")
        return None, (other, f"compiled under {under(other.adapters)}; this chat applies {under(adapters)}")

    # ------------------------------------------------------------------ invalidation
    def on_purge(self, event: Event) -> None:
        """Erasure: the subscriber to ``memory_purged`` (:mod:`memos.events`)."""
        self.invalidate(event.memory_ids, "a memory inside was purged", purge=True, actor=event.actor)

    def on_adapter_retired(self, event: Event) -> None:
        """The subscriber to ``artifact_retired``: a prefix computed under a retired adapter
        (its files deleted; a memory it was trained on may have been purged) is purged too."""
        if event.details.get("kind") != "lora":
            return
        aid = str(event.details.get("id", ""))
        why = f"the adapter {aid[:12]} it was computed under was retired ({event.reason})"
        self.invalidate_adapters([aid], why, purge=True, actor=event.actor)

    def invalidate(
        self, memory_ids: Sequence[str], reason: str, *, purge: bool = False, actor: str | None = None
    ) -> builtins.list[str]:
        """Mark every prefix containing one of ``memory_ids`` stale; with ``purge``, delete
        their blob files and scrub the token ids and text from their manifests (each one
        purged is published as ``artifact_retired``, by ``actor``)."""
        wanted = set(memory_ids)
        if not wanted:
            return []
        return self._invalidate(
            lambda m: bool({x["id"] for x in m.get("memories", [])} & wanted), wanted, reason, purge, actor
        )

    def invalidate_adapters(
        self, adapter_ids: Sequence[str], reason: str, *, purge: bool = False, actor: str | None = None
    ) -> builtins.list[str]:
        """As :meth:`invalidate`, for the prefixes computed under one of ``adapter_ids``."""
        wanted = set(adapter_ids)
        if not wanted:
            return []
        return self._invalidate(
            lambda m: bool(set(m.get("adapters", [])) & wanted), set(), reason, purge, actor
        )

    def _invalidate(
        self,
        hits: Callable[[Mapping[str, Any]], bool],
        wanted: set[str],
        reason: str,
        purge: bool,
        actor: str | None,
    ) -> builtins.list[str]:
        """Mark the prefixes whose manifest ``hits`` stale, or purge them (``wanted``: the
        purged memory ids, scrubbed from the manifests)."""
        home = self.home
        hit: builtins.list[str] = []
        retired: builtins.list[Event] = []
        with home.write_lock, home.store.session() as s:
            for row in s.scalars(select(BlobRow).where(BlobRow.kind == KIND)):
                if not hits(row.manifest):
                    continue
                hit.append(row.sha256)
                manifest = dict(row.manifest)
                if purge:
                    self._forget(row.sha256, unlink=False)
                    self.blobs.unlink_after_commit(s, row.sha256)
                    if manifest.get("state") != "purged":
                        retired.append(_retired(row, home.clock(), actor, reason))
                    manifest.update(state="purged", stale_reason=reason, token_ids=[], text="", lines=[])
                    manifest["memories"] = [m for m in manifest.get("memories", []) if m["id"] not in wanted]
                    for seg in manifest.get("segments", []):
                        seg["memory_ids"] = [m for m in seg["memory_ids"] if m not in wanted]
                elif manifest.get("state") == "ready":
                    manifest.update(state="stale", stale_reason=reason)
                row.manifest = manifest
        with self._lock:
            for key in [k for k in self._loaded if k[0] in hit]:
                del self._loaded[key]
        self._publish(*retired)
        return hit

    def _refresh(self, infos: Sequence[ActivationInfo]) -> None:
        """Check ready prefixes against the rows: a memory changed or gone, or an adapter
        they were computed under no longer active, makes them stale."""
        ready = [i for i in infos if i.state == "ready"]
        if not ready:
            return
        ids = {m["id"] for i in ready for m in i.memories}
        adapter_ids = {a for i in ready for a in i.adapters}
        with self.home.store.session() as s:
            current = {
                r.id: (r.state, r.version)
                for r in s.scalars(select(MemoryRow).where(MemoryRow.id.in_(list(ids))))
            }
            adapters = {
                r.sha256: (str(r.manifest.get("state")), r.manifest.get("reason"))
                for r in s.scalars(select(BlobRow).where(BlobRow.sha256.in_(list(adapter_ids))))
            }
        for info in ready:
            for aid in info.adapters:
                state, said = adapters.get(aid, ("gone", None))
                if state != "active":
                    reason = f"adapter {aid[:12]} is {state}" + (f": {said}" if said else "")
                    self.invalidate_adapters([aid], reason)
                    info.state, info.stale_reason = "stale", reason
                    break
            if info.state != "ready":
                continue
            for m in info.memories:
                state, version = current.get(m["id"], ("purged", None))
                if state != "active" or version != m["version"]:
                    why = (
                        f"memory {m['id']} is {state}"
                        if state != "active"
                        else f"memory {m['id']} changed (v{version})"
                    )
                    self.invalidate([m["id"]], why)
                    info.state, info.stale_reason = "stale", why
                    break

    def delete_cube_blobs(self, s: Session, cube_id: str, actor: str | None) -> builtins.list[Event]:
        """Remove the cube's prefixes (rows and files), inside the caller's transaction.
        Returns an ``artifact_retired`` per prefix not purged already, by ``actor``, for
        the caller to publish once it committed."""
        at = self.home.clock()
        retired = []
        for row in mf.rows(s, cube_id):
            if row.manifest.get("state") != "purged":
                retired.append(_retired(row, at, actor, "its cube was deleted"))
            self._delete_row(s, row)
        return retired

    # ------------------------------------------------------------------ helpers
    def _runtime(self, runtime: str | Runtime | None) -> Runtime:
        rt = runtime if runtime is not None and not isinstance(runtime, str) else self.runtimes(runtime)
        if not rt.supports_kv_prefix:
            raise InvalidState(f"the {rt.name} runtime cannot hold activation memory (no KV prefix support)")
        return rt

    def _delete_row(self, s: Session, row: BlobRow) -> None:
        """The row now, its file once ``s`` commits."""
        s.delete(row)
        self._forget(row.sha256, unlink=False)
        self.blobs.unlink_after_commit(s, row.sha256)

    def _forget(self, sha: str, *, unlink: bool = True) -> None:
        """Drop a prefix from the process's cache (and its file): its row is gone."""
        self._verified.discard(sha)
        if unlink:
            self.blobs.unlink(sha)
        with self._lock:
            for key in [k for k in self._loaded if k[0] == sha]:
                del self._loaded[key]

    def _publish(self, *events: Event) -> None:
        """After the commit (:mod:`memos.events`)."""
        if events:
            self.home.events.publish(*events)


def _retired(row: BlobRow, at: datetime, actor: str | None, reason: str) -> Event:
    """``artifact_retired`` for the prefix of ``row``: its blob is gone."""
    members = tuple(m["id"] for m in row.manifest.get("memories", []))
    details = {"kind": "kv_prefix", "id": row.sha256, "name": row.manifest.get("name", "default")}
    return Event(EventKind.artifact_retired, at, actor, row.cube_id, members, reason, details)
