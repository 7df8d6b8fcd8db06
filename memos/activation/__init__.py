"""Activation memory: a cube's memories compiled into a KV-cache prefix for one model.

A compiled prefix is the beginning of the prompt ``MemOS.chat`` builds — the system
prompt and a ``Memories:`` block listing the compiled memories — prefilled once by the
runtime, stored, and handed back to the runtime so a chat skips that prefill.

Correctness rules, each enforced here or in the runtimes:

- **Fingerprint.** The manifest and the blob name the runtime fingerprint (runtime, model,
  weights hash, dtype, tokenizer hash); loading under another raises
  :class:`~memos.errors.FingerprintMismatch`.
- **Positions.** Segments (say a ``profile`` and a ``hot`` segment) are compiled
  *jointly*, as one prefill of the whole prefix, in order. Re-rotating the keys of
  separately built segments would fix their positions but not their content: the tokens
  of a later segment never attended to the earlier one, so the cache would differ from a
  plain prefill of the same text. Joint compilation is exact by construction (the tests
  compare logits); the manifest records each segment's token span.
- **Copy-on-use.** Runtimes build a fresh working cache from the stored tensors on every
  use; the blob's bytes and hash never change.
- **Invalidation.** The manifest lists every memory id and version inside. Updating,
  deleting or purging one marks the prefix ``stale`` (eagerly through the operations'
  hooks, and again checked before each use); chat never uses a stale prefix — it falls
  back to plaintext memory until the prefix is recompiled. Purging deletes the blob
  file and scrubs the token ids from the manifest.

Storage: the blob is a safetensors file, content-addressed under
``$MEMOS_HOME/blobs/sha256/<2>/<sha256>.safetensors``; its manifest is a ``blobs`` row
(``kind = "activation"``).
"""

from __future__ import annotations

import builtins
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select

from memos import acl
from memos.errors import FingerprintMismatch, InvalidInput, InvalidState, NotFound
from memos.events import Event
from memos.protocols import KVPrefix, Runtime
from memos.runtime import ChatMessage, sha256_file
from memos.storage.relational.models import BlobRow, MemoryRow
from memos.types import MemoryItem

if TYPE_CHECKING:
    from memos.core import MemOS

KIND = "activation"
SENTINEL = "\u2063MEMOS-SYSTEM\u2063"
#: memory types offered to the selector's segments
PROFILE_TYPES = ("profile", "preference")
HOT_TYPES = ("fact", "procedure")


class Segment(BaseModel):
    name: str
    start: int = Field(description="first token of the segment in the prefix")
    end: int = Field(description="one past its last token")
    memory_ids: list[str]


class ActivationInfo(BaseModel):
    """The manifest of one compiled KV prefix."""

    id: str = Field(description="sha256 of the blob")
    cube_id: str
    name: str
    state: Literal["ready", "stale", "purged"]
    stale_reason: str | None = None
    fingerprint: dict[str, str]
    memories: list[dict[str, Any]] = Field(description="[{id, version}] in prefix order")
    segments: list[Segment]
    n_tokens: int
    bytes: int
    bytes_per_token: float
    compile_ms: float
    created_at: datetime
    system_prompt: str

    @property
    def memory_ids(self) -> list[str]:
        return [m["id"] for m in self.memories]


def memory_text(m: MemoryItem) -> str:
    """One memory as a line of the prompt's ``Memories:`` block."""
    when = m.valid_from or m.recorded_at
    date = f"({when.date().isoformat()}) " if when else ""
    speaker = (m.provenance.speaker or m.provenance.role) if m.type == "episode" else None
    who = f"{speaker}: " if speaker else ""
    return f"- {date}{who}{m.text.strip()}"


def write_blob(path: Path, data: bytes) -> Path:
    """Write a content-addressed blob once, atomically (temp file, fsync, rename)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.partial")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    return path


def memories_block(system_prompt: str, lines: Sequence[str]) -> str:
    """The system message's content: the prompt, then the memories, one per line."""
    if not lines:
        return system_prompt
    return system_prompt + "\n\nMemories:\n" + "\n".join(lines)


def prefix_text(runtime: Runtime, system_prompt: str, lines: Sequence[str]) -> str:
    """The rendered prompt up to the end of the last compiled memory line.

    Rendered through the runtime's own template with a sentinel as the system content,
    so the prefix is exactly how every chat prompt with these memories begins."""
    head = runtime.render([ChatMessage("system", SENTINEL), ChatMessage("user", "x")]).split(SENTINEL)[0]
    return head + memories_block(system_prompt, lines)


class ActivationMemory:
    """``mos.activation``: compile, list, show, drop, and the chat's lookup."""

    def __init__(self, mos: MemOS) -> None:
        self.mos = mos
        self._loaded: OrderedDict[tuple[str, str], KVPrefix] = OrderedDict()
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ paths
    @property
    def blob_dir(self) -> Path:
        return self.mos.settings.home / "blobs" / "sha256"

    def blob_path(self, sha: str) -> Path:
        return self.blob_dir / sha[:2] / f"{sha}.safetensors"

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
    ) -> ActivationInfo:
        """Compile memories into a KV prefix for ``runtime`` (default: the configured one).

        Choose the memories with ``segments`` (``{"profile": [ids], "hot": [ids]}``, in
        order), ``memory_ids`` (one segment), or neither: the selector takes a
        ``profile`` segment (profile and preference memories) and a ``hot`` segment (the
        top ``top_n`` facts by importance, then use, then recency), within
        ``token_budget`` prefix tokens. A newer compile under the same ``name`` for the
        same model replaces the older one.
        """

        mos = self.mos
        rt = self._runtime(runtime)
        if (
            isinstance(token_budget, bool)
            or not isinstance(token_budget, int)
            or not 16 <= token_budget < rt.context_length
        ):
            raise InvalidInput(f"token_budget must be an integer from 16 to {rt.context_length - 1}")
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise InvalidInput("name must be a non-empty string of at most 64 characters")
        mos.access.flush()  # the selectors order by hits
        with mos.store.session() as s:
            acl.require(s, cube_id, user_id, acl.WRITE)
            chosen = self._choose(s, cube_id, memory_ids, segments, top_n)
        owner_name = mos.get_user(user_id).name  # its own session: not inside the write one above
        system_prompt = mos.settings.chat.system_prompt.replace("{user}", owner_name)
        # fit the budget: whole memories, in order, while the prefix stays within it
        lines: list[str] = []
        kept: list[tuple[str, MemoryItem]] = []
        for seg, item in chosen:
            trial = [*lines, memory_text(item)]
            if rt.count_tokens(prefix_text(rt, system_prompt, trial)) > token_budget:
                if not kept and memory_ids is not None:
                    raise InvalidInput(f"memory {item.id} alone does not fit a {token_budget}-token prefix")
                if memory_ids is not None or segments is not None:
                    raise InvalidInput(
                        f"the chosen memories do not fit a {token_budget}-token prefix; raise token_budget"
                    )
                break
            lines, kept = trial, [*kept, (seg, item)]
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
        data = rt.build_prefix(ids)
        compile_ms = (time.perf_counter() - t0) * 1000
        sha = self._write_blob(data)
        now = mos.clock()
        fp = rt.fingerprint
        manifest = {
            "name": name,
            "state": "ready",
            "stale_reason": None,
            "fingerprint": fp.as_dict(),
            "fingerprint_key": fp.key,
            "memories": [{"id": m.id, "version": m.version} for _, m in kept],
            "segments": [sp.model_dump() for sp in spans],
            "token_ids": ids,
            "text": text,
            "lines": lines,
            "system_prompt": system_prompt,
            "n_tokens": len(ids),
            "compile_ms": round(compile_ms, 1),
        }
        with mos.write_lock, mos.store.session() as s:
            for old in self._rows(s, cube_id):
                if (
                    old.manifest.get("name") == name
                    and old.manifest.get("fingerprint_key") == fp.key
                    and old.sha256 != sha
                ):
                    self._delete_row(s, old)
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
            info = self._info(sha, cube_id, len(data), now, manifest)
        return info

    def _choose(
        self,
        s: Any,
        cube_id: str,
        memory_ids: Sequence[str] | None,
        segments: Mapping[str, Sequence[str]] | None,
        top_n: int,
    ) -> list[tuple[str, MemoryItem]]:
        from memos.plaintext.convert import memory_from_row

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

    def _write_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        write_blob(self.blob_path(sha), data)
        return sha

    # ------------------------------------------------------------------ read
    def list(self, cube_id: str, *, user_id: str) -> builtins.list[ActivationInfo]:
        """The cube's compiled prefixes (stale ones included, marked), newest first."""

        mos = self.mos
        with mos.store.session() as s:
            acl.require(s, cube_id, user_id, acl.READ)
            rows = self._rows(s, cube_id)
            out = [self._info(r.sha256, r.cube_id or cube_id, r.size, r.created_at, r.manifest) for r in rows]
        self._refresh(out)
        return sorted(out, key=lambda i: i.created_at, reverse=True)

    def show(self, kv_id: str, *, user_id: str) -> ActivationInfo:

        mos = self.mos
        with mos.store.session() as s:
            row = self._row(s, kv_id)
            acl.require(s, row.cube_id, user_id, acl.READ)
            info = self._info(row.sha256, row.cube_id or "", row.size, row.created_at, row.manifest)
        self._refresh([info])
        return info

    def drop(self, kv_id: str, *, user_id: str) -> None:
        """Delete a compiled prefix: its manifest row and its blob file."""

        mos = self.mos
        with mos.write_lock, mos.store.session() as s:
            row = self._row(s, kv_id)
            acl.require(s, row.cube_id, user_id, acl.WRITE)
            self._delete_row(s, row)

    def load(self, kv_id: str, runtime: Runtime) -> tuple[ActivationInfo, KVPrefix]:
        """Load a ready prefix for ``runtime``; refuses another fingerprint and stale prefixes."""
        mos = self.mos
        with mos.store.session() as s:
            row = self._row(s, kv_id)
            info = self._info(row.sha256, row.cube_id or "", row.size, row.created_at, row.manifest)
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
        path = self.blob_path(info.id)
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
        self, cube_id: str, runtime: Runtime
    ) -> tuple[ActivationInfo, KVPrefix, str, builtins.list[str]] | None:
        """The newest ready prefix of ``cube_id`` for this runtime's fingerprint, with its
        text and memory lines."""
        if not runtime.supports_kv_prefix:
            return None
        mos = self.mos
        key = runtime.fingerprint.key
        with mos.store.session() as s:
            rows = [r for r in self._rows(s, cube_id) if r.manifest.get("fingerprint_key") == key]
            rows.sort(key=lambda r: r.created_at, reverse=True)
            infos = [
                (self._info(r.sha256, cube_id, r.size, r.created_at, r.manifest), r.manifest.get("text", ""),
                 list(r.manifest.get("lines", [])))
                for r in rows
            ]  # fmt: skip
        self._refresh([i for i, _, _ in infos])
        for info, text, lines in infos:
            if info.state == "ready":
                try:
                    info, prefix = self.load(info.id, runtime)
                except InvalidState:  # its file went missing: now stale; plaintext memory serves
                    continue
                return info, prefix, str(text), lines
        return None

    # ------------------------------------------------------------------ invalidation
    def on_purge(self, event: Event) -> None:
        """Erasure: the subscriber to ``memory_purged`` (:mod:`memos.events`)."""
        self.invalidate(event.memory_ids, "a memory inside was purged", purge=True)

    def invalidate(
        self, memory_ids: Sequence[str], reason: str, *, purge: bool = False
    ) -> builtins.list[str]:
        """Mark every prefix containing one of ``memory_ids`` stale; with ``purge``, delete
        their blob files and scrub the token ids and text from their manifests."""
        wanted = set(memory_ids)
        if not wanted:
            return []
        mos = self.mos
        hit: builtins.list[str] = []
        with mos.write_lock, mos.store.session() as s:
            for row in s.scalars(select(BlobRow).where(BlobRow.kind == KIND)):
                inside = {m["id"] for m in row.manifest.get("memories", [])}
                if not inside & wanted:
                    continue
                hit.append(row.sha256)
                manifest = dict(row.manifest)
                if purge:
                    self._unlink(row.sha256)
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
        return hit

    def _refresh(self, infos: Sequence[ActivationInfo]) -> None:
        """Check ready prefixes against the rows: a memory changed or gone makes them stale."""
        ready = [i for i in infos if i.state == "ready"]
        if not ready:
            return
        ids = {m["id"] for i in ready for m in i.memories}
        with self.mos.store.session() as s:
            current = {
                r.id: (r.state, r.version)
                for r in s.scalars(select(MemoryRow).where(MemoryRow.id.in_(list(ids))))
            }
        for info in ready:
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

    # ------------------------------------------------------------------ helpers
    def _runtime(self, runtime: str | Runtime | None) -> Runtime:
        rt = runtime if runtime is not None and not isinstance(runtime, str) else self.mos.runtime(runtime)
        if not rt.supports_kv_prefix:
            raise InvalidState(f"the {rt.name} runtime cannot hold activation memory (no KV prefix support)")
        return rt

    @staticmethod
    def _rows(s: Any, cube_id: str) -> builtins.list[BlobRow]:
        return list(s.scalars(select(BlobRow).where(BlobRow.kind == KIND, BlobRow.cube_id == cube_id)))

    @staticmethod
    def _row(s: Any, kv_id: str) -> BlobRow:
        if not isinstance(kv_id, str) or len(kv_id) < 6:
            raise InvalidInput("give an activation memory id (at least 6 characters of it)")
        rows = list(
            s.scalars(select(BlobRow).where(BlobRow.kind == KIND, BlobRow.sha256.startswith(kv_id.lower())))
        )
        if len(rows) != 1:
            raise NotFound(
                f"no activation memory {kv_id!r}" if not rows else f"{kv_id!r} is ambiguous; give more of it"
            )
        return rows[0]

    def _delete_row(self, s: Any, row: BlobRow) -> None:
        self._unlink(row.sha256)
        s.delete(row)
        with self._lock:
            for key in [k for k in self._loaded if k[0] == row.sha256]:
                del self._loaded[key]

    def delete_cube_blobs(self, s: Any, cube_id: str) -> None:
        """Remove the cube's prefixes (rows and files), inside the caller's transaction."""
        for row in self._rows(s, cube_id):
            self._delete_row(s, row)

    def _unlink(self, sha: str) -> None:
        self._verified.discard(sha)
        path = self.blob_path(sha)
        path.unlink(missing_ok=True)

    @staticmethod
    def _info(sha: str, cube_id: str, size: int, created: datetime, m: Mapping[str, Any]) -> ActivationInfo:
        n = int(m.get("n_tokens", 0))
        return ActivationInfo(
            id=sha,
            cube_id=cube_id,
            name=m.get("name", "default"),
            state=m.get("state", "ready"),
            stale_reason=m.get("stale_reason"),
            fingerprint=dict(m.get("fingerprint", {})),
            memories=list(m.get("memories", [])),
            segments=[Segment(**sg) for sg in m.get("segments", [])],
            n_tokens=n,
            bytes=size,
            bytes_per_token=round(size / n, 1) if n else 0.0,
            compile_ms=float(m.get("compile_ms", 0.0)),
            created_at=created,
            system_prompt=m.get("system_prompt", ""),
        )


__all__ = ["ActivationInfo", "ActivationMemory", "Segment", "memories_block", "memory_text", "prefix_text"]
