"""Content-addressed blob files: ``$MEMOS_HOME/blobs/sha256/<2>/<sha256><suffix>``.

Compiled KV prefixes (:mod:`memos.activation`) and LoRA adapters (:mod:`memos.parametric`)
keep their tensors here; their manifests are ``blobs`` rows. A file is named by the hash
of its bytes, written once, atomically, and never changed afterwards — so a reader that
checked it once can trust it for as long as it exists.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

#: the suffixes of blob files: tensors (safetensors) and llama.cpp's LoRA exports
SUFFIXES = (".safetensors", ".gguf")


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

    def sweep(self, known: Iterable[str]) -> list[str]:
        """Delete the blob files whose sha256 is not in ``known`` (those no row names:
        left by a crash after the row's delete committed, or by a write whose row never
        did), and unfinished temporary files. Call it only while no other process can be
        writing blobs (the embedded home's lock): a file is written before its row.
        Returns the names removed."""
        keep = set(known)
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for path in sorted(self.root.glob("*/*")):
            name = path.name
            sha = name.split(".", 1)[0]
            partial = name.endswith(".partial")
            if partial or (path.suffix in SUFFIXES and sha not in keep):
                path.unlink(missing_ok=True)
                removed.append(name)
        return removed


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
