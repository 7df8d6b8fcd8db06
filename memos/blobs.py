"""Content-addressed blob files: ``$MEMOS_HOME/blobs/sha256/<2>/<sha256><suffix>``.

Compiled KV prefixes (:mod:`memos.activation`) and LoRA adapters (:mod:`memos.parametric`)
keep their tensors here; their manifests are ``blobs`` rows. A file is named by the hash
of its bytes, written once, atomically, and never changed afterwards — so a reader that
checked it once can trust it for as long as it exists.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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
