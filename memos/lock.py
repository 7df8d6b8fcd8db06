"""One process at a time on an embedded home.

Qdrant Edge and a SQLite file are single-process stores; a second process that opened
them would corrupt the index. The first opener takes an exclusive ``flock`` on
``$MEMOS_HOME/.lock`` and writes who it is; a second opener gets
:class:`~memos.errors.HomeLocked` naming the holder. The kernel releases the lock when
the process dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO

from memos.errors import HomeLocked


class HomeLock:
    def __init__(self, home: Path) -> None:
        self.path = home / ".lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            fh.close()
            raise HomeLocked(
                f"the memos home {self.path.parent} is open in another process ({holder}). "
                "An embedded home (SQLite + Qdrant Edge) serves one process at a time: wait for the "
                "other one to finish or close it, or, for several processes, point them all at "
                "PostgreSQL (MEMOS_RELATIONAL_URL) and a Qdrant server (MEMOS_VECTOR_URL)."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "cmd": " ".join(sys.argv)[:200],
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            )
        )
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            try:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._fh.close()
                self._fh = None


def holder(home: Path) -> dict[str, object] | None:
    """Who holds the lock of ``home`` in another process (pid, host, cmd, since), or None.

    Probes with a non-blocking shared lock that is released at once; takes nothing.
    """
    path = home / ".lock"
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info = json.loads(fh.read() or "{}")
            except ValueError:
                info = {}
            return info if isinstance(info, dict) else {}
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return None
