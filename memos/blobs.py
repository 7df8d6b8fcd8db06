"""Content-addressed blob files: ``$MEMOS_HOME/blobs/sha256/<2>/<sha256><suffix>``.

Compiled KV prefixes (:mod:`memos.activation`) and LoRA adapters (:mod:`memos.parametric`)
keep their tensors here; their manifests are ``blobs`` rows. A file is named by the hash
of its bytes, written once, atomically, and never changed afterwards — so a reader that
checked it once can trust it for as long as it exists.

A file is written before the row that names it commits, and deleted after the row's
delete commits, so a crash in between leaves a file no row names. :meth:`BlobStore.sweep`
removes those. While other processes may be writing blobs (a PostgreSQL deployment, the
scheduled sweep) it takes only files older than a grace period, by their mtime: a write
gives a file a fresh mtime — :func:`write_blob` touches a file that is there already,
since a new row may name an old orphan — so a file whose row is about to commit is young.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

#: the suffixes of blob files: tensors (safetensors) and llama.cpp's LoRA exports
SUFFIXES = (".safetensors", ".gguf")
#: unfinished writes (and files a sweep is about to delete)
PARTIAL = ".partial"
#: the end of the name of a file a sweep moved aside to check it once more
_SWEPT = f".sweep{PARTIAL}"


class BlobStore:
    """The blob files of one home."""

    def __init__(self, home: Path) -> None:
        self.root = home / "blobs" / "sha256"

    def path(self, sha: str, suffix: str = ".safetensors") -> Path:
        return self.root / sha[:2] / f"{sha}{suffix}"

    def write(self, data: bytes, suffix: str = ".safetensors") -> str:
        """Store ``data`` (once); returns its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        write_blob(self.path(sha, suffix), data)
        return sha

    def unlink(self, sha: str, suffix: str = ".safetensors") -> None:
        self.path(sha, suffix).unlink(missing_ok=True)

    def unlink_after_commit(self, s: Session, sha: str, suffix: str = ".safetensors") -> None:
        """Delete the file once ``s`` commits, not before: a transaction that fails or is
        rolled back leaves its rows naming files that are still there. A crash between
        the commit and the unlink leaves a file no row names, which :meth:`sweep` removes."""
        pending: list[tuple[str, str]] | None = s.info.get("memos_unlink")
        if pending is None:
            pending = s.info["memos_unlink"] = []

            def unlink(session: Session) -> None:
                for p in session.info.pop("memos_unlink", []):
                    self.unlink(*p)

            def forget(session: Session) -> None:
                session.info.pop("memos_unlink", None)

            event.listen(s, "after_commit", unlink, once=True)
            event.listen(s, "after_rollback", forget, once=True)
        pending.append((sha, suffix))

    def sweep(self, known: Callable[[], Iterable[str]], *, grace: float) -> list[str]:
        """Delete the blob files whose sha256 is not in ``known()`` (those no row names:
        left by a crash after the row's delete committed, or by a write whose row never
        did), and unfinished temporary files, if their mtime is ``grace`` seconds old or
        more. Returns the names removed.

        Safe while other processes write blobs: a row that commits before a file's
        removal keeps it. The old files are listed first, then ``known()`` is read; each
        file then left is moved aside under a temporary name (a write that touches the
        old name after that finds nothing and writes it anew) and its mtime read again —
        one touched before the move goes back. ``grace=0`` only while no other process
        can be writing (the embedded home's lock)."""
        cutoff = time.time() - grace
        candidates = [p for p in sorted(self.root.glob("*/*")) if _old(p, cutoff)]
        if not candidates:
            return []
        keep = set(known())
        removed: list[str] = []
        for path in candidates:
            name = path.name
            if name.endswith(PARTIAL):  # abandoned: temporary names are never reused
                original = (
                    path.with_name(name[: -len(_SWEPT)].rsplit(".", 1)[0]) if name.endswith(_SWEPT) else None
                )
                if original is not None and original.name.split(".", 1)[0] in keep:
                    # a sweep died between moving a file aside and putting it back: a row
                    # that committed meanwhile names it
                    _put_back(path, original)
                elif _unlink(path):
                    removed.append(name)
            elif (
                path.suffix in SUFFIXES
                and name.split(".", 1)[0] not in keep
                and self._unlink_if_old(path, cutoff)
            ):
                removed.append(name)
        return removed

    def _unlink_if_old(self, path: Path, cutoff: float) -> bool:
        aside = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}{_SWEPT}")
        try:
            path.rename(aside)
        except FileNotFoundError:
            return False
        if _old(aside, cutoff):
            aside.unlink(missing_ok=True)
            return True
        aside.replace(path)  # touched by a write: its row is committing (same bytes if rewritten)
        return False


def _put_back(aside: Path, original: Path) -> None:
    if original.exists():  # written anew meanwhile: the same bytes
        aside.unlink(missing_ok=True)
    else:
        aside.replace(original)


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _old(path: Path, cutoff: float) -> bool:
    """Whether ``path`` exists and was last written at or before ``cutoff``."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return False
    return mtime <= cutoff


def write_blob(path: Path, data: bytes) -> Path:
    """Write a content-addressed blob once, atomically (temp file, fsync, rename). A file
    that is there already gets a fresh mtime: the row about to name it keeps it from a
    sweep's grace period (:meth:`BlobStore.sweep`)."""
    try:
        os.utime(path)
        return path
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return path
