"""Writing a cube to a ``.memcube`` (see :mod:`memos.archive`)."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, select

from memos import acl
from memos.archive.format import (
    BATCH,
    MANIFEST,
    MEMBERS,
    CubeInfo,
    Entry,
    Manifest,
    Member,
)
from memos.errors import ArchiveError, Conflict, InvalidInput, MemosError, StorageError
from memos.events import Event, EventKind
from memos.storage.relational.models import CubeRow, MemoryRow
from memos.version import __version__

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from memos.home import Home


log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- export
def export_cube(home: Home, cube_id: str, path: Path, *, user_id: str, overwrite: bool = False) -> Path:
    """Write ``cube_id`` to ``path`` as a ``.memcube`` archive; needs read access.

    Rows stream from one read transaction (a consistent snapshot) into a temporary file
    beside the target, which takes its place only when complete; on any failure it is
    removed. An existing file is replaced only with ``overwrite``; what is not a regular
    file (a directory, a device such as /dev/null, a FIFO, a symlink to one) never is.
    """
    path = Path(path)
    target = _target(path, overwrite)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        home.access.flush()
        with home.store.session() as s, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            acl.require(s, cube_id, user_id, acl.READ)
            cube = s.get(CubeRow, cube_id)
            assert cube is not None  # acl.require checked it
            now = home.clock()
            counts: dict[str, int] = {}
            members: dict[str, Entry] = {}
            for member in MEMBERS:
                counts[member.key], members[member.name] = _write_member(s, zf, member, cube_id, now)
            manifest = Manifest(
                package_version=__version__,
                created_at=now,
                embedder_id=home.embedder.id,
                cube=CubeInfo(**{f: getattr(cube, f) for f in CubeInfo.model_fields}),
                counts=counts,
                members=members,
            )
            zf.writestr(_zipinfo(MANIFEST, now), manifest.model_dump_json(indent=2))
        os.replace(tmp, _target(path, overwrite))  # judged again: it may have changed meanwhile
    except MemosError:  # PermissionDenied is an OSError too
        raise
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)
    event = Event(EventKind.cube_exported, home.clock(), user_id, cube_id, details={"counts": counts})
    with home.recording() as rec, home.store.session() as s:  # who took a copy, and when, is worth knowing
        rec.record(s, event)
    log.info("exported cube %s to %s (%s)", cube_id, path, counts)
    return path


def _target(path: Path, overwrite: bool) -> Path:
    """The file the archive will become (a symlink's target), once what must not be replaced
    has been refused."""
    try:
        if not os.path.lexists(path):
            if not path.parent.is_dir():
                raise InvalidInput(f"cannot write {path}: there is no folder {path.parent}")
            return path
        real = path.resolve()
        mode = real.stat().st_mode if real.exists() else stat.S_IFREG  # a dangling link makes a new file
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    if not stat.S_ISREG(mode):
        raise InvalidInput(
            f"{path} is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}; an export never replaces "
            "anything but a regular file: give the path of a .memcube file"
        )
    if not overwrite:
        raise Conflict(f"{path} exists already", ("overwrite",), "to replace it")
    return real


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
}


def _unwritable(path: Path, exc: OSError) -> MemosError:
    why = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        return StorageError(f"writing the archive {path} failed: {why}; nothing was written")
    return InvalidInput(
        f"cannot write the archive to {path}: {why}; give a file path in a folder you can write to"
    )


def _write_member(
    s: Session, zf: zipfile.ZipFile, member: Member, cube_id: str, now: datetime
) -> tuple[int, Entry]:
    t = member.table
    stmt = select(*(t.c[f] for f in member.fields))
    if member.scope == "cube":
        stmt = stmt.where(t.c.cube_id == cube_id)
    else:
        mem = cast(Table, MemoryRow.__table__)
        stmt = stmt.join(mem, mem.c.id == t.c.memory_id).where(mem.c.cube_id == cube_id)
    stmt = stmt.order_by(*(t.c[f] for f in member.order)).execution_options(yield_per=BATCH)
    digest, size, count = hashlib.sha256(), 0, 0
    with zf.open(_zipinfo(member.name, now), "w", force_zip64=True) as fh:
        for part in s.execute(stmt).partitions():
            rows = ({k: _encode(v) for k, v in r._mapping.items()} for r in part)
            data = "".join(_line(member, row) for row in rows).encode("utf-8")
            fh.write(data)
            digest.update(data)
            size += len(data)
            count += len(part)
    return count, Entry(sha256=digest.hexdigest(), bytes=size)


def _line(member: Member, row: dict[str, Any]) -> str:
    try:
        return json.dumps(row, allow_nan=False) + "\n"
    except ValueError as exc:  # NaN or infinity, let in by an older memos: say which row
        which = ", ".join(f"{k} {row[k]}" for k in ("memory_id", "id", "version") if row.get(k) is not None)
        raise ArchiveError(
            f"cannot export: a row of {member.key} ({which}) holds NaN or infinity, which JSON cannot hold; "
            "update that memory's metadata (or purge it), then export again"
        ) from exc


def _zipinfo(name: str, now: datetime) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=now.astimezone(UTC).timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16  # say "plain file", as import requires
    return info


def _encode(value: Any) -> Any:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
