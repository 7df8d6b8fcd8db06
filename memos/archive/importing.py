"""Loading a checked ``.memcube`` into a home, in one transaction (see :mod:`memos.archive`)."""

from __future__ import annotations

import logging
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from memos import acl
from memos.archive.format import BATCH, BATCH_BYTES, MEMBERS, Manifest, Member
from memos.archive.reading import Rules, member_lines, open_archive, read_row, verify_zip
from memos.errors import ArchiveError, Conflict
from memos.events import Event, EventKind
from memos.plaintext.validation import MAX_KEY_CHARS, check_id
from memos.storage.relational.models import AclRow, BlobRow, CubeRow, MemoryRow
from memos.types import Cube, Role

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from memos.config import Settings
    from memos.home import Home


log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- import
def import_cube(
    home: Home,
    path: Path,
    *,
    user_id: str,
    cube_id: str | None = None,
    name: str | None = None,
    copy: bool = False,
) -> Cube:
    """Load a ``.memcube`` as a new cube owned by ``user_id`` (see the module docstring).

    Memory ids are kept, so an archive lives in a home once; ``copy`` imports it again
    beside itself, with new memory ids and (unless ``cube_id`` is given) a new cube id.
    """
    with open_archive(Path(path)) as zf:
        manifest, memory_ids = verify_zip(zf, home.settings)
        src = manifest.cube
        if cube_id is not None:
            new_id = check_id(cube_id, "cube_id", MAX_KEY_CHARS)
        else:
            new_id = str(uuid.uuid4()) if copy else src.id
        new_name = check_id(name if name is not None else src.name, "cube name", MAX_KEY_CHARS)
        target = _Target(user_id, new_id, new_name, cube_id is not None, name is not None, copy)
        with home.store.session() as s:  # fail fast on a clash, before reading a large archive again
            _check_target(s, memory_ids, target)
        now = home.clock()
        # what was imported from where: the archive's own facts, and what this home did differently
        details: dict[str, Any] = {
            "archive": manifest.model_dump(mode="json", exclude={"cube", "members"}),
            "source_cube": src.model_dump(mode="json", include={"id", "name", "owner_id"}),
        }
        if manifest.embedder_id != home.embedder.id:
            details["reembedded_with"] = home.embedder.id  # vectors never travel: the index embeds the text
        ids = {old: str(uuid.uuid4()) for old in sorted(memory_ids)} if copy else None
        if copy:
            details["copy"] = True  # memory ids are new; the audit events keep the old ones in details
        cube = CubeRow(**{**src.model_dump(), "id": new_id, "name": new_name, "owner_id": user_id})
        grant = AclRow(cube_id=new_id, user_id=user_id, role=Role.owner, granted_at=now, granted_by=user_id)
        with home.recording() as rec:
            with home.write_lock:
                try:
                    with home.store.session() as s:
                        _check_target(s, memory_ids, target)
                        s.add(cube)
                        s.flush()
                        s.add(grant)
                        details["blobs_already_present"] = _write_rows(
                            s, zf, manifest, new_id, ids, home.settings
                        )
                        rec.record(s, Event(EventKind.cube_imported, now, user_id, new_id, details=details))
                except IntegrityError as exc:
                    raise ArchiveError(
                        f"the archive's rows conflict with each other or this home: {exc.orig}"
                    ) from exc
            home.graphs.invalidate(new_id)
            home.indexer.sync()
    log.info("imported %s as cube %s (%s)", path, new_id, manifest.counts)
    fields = ("id", "name", "owner_id", "created_at", "description")
    return Cube(**{f: getattr(cube, f) for f in fields}, role=Role.owner)


@dataclass(frozen=True)
class _Target:
    """Where an import goes, and which of it the caller chose."""

    user_id: str
    cube_id: str
    name: str
    chose_id: bool
    chose_name: bool
    copy: bool


def _check_target(s: Session, memory_ids: set[str], t: _Target) -> None:
    """Refuse, before writing anything, what would collide with this home; say what avoids it."""
    acl.user(s, t.user_id)
    ids = sorted(memory_ids) if not t.copy else []
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        there = s.scalar(select(MemoryRow.cube_id).where(MemoryRow.id.in_(batch)).limit(1))
        if there is not None:  # memory ids are kept, so one archive can live in a home once
            cube = s.get(CubeRow, there)
            readable = s.get(AclRow, (there, t.user_id)) is not None
            where = f" as cube {cube.name!r} ({there})" if cube is not None and readable else ""
            taken = _name_taken(s, t)
            raise Conflict(
                f"this archive is in this home already{where}",
                ("copy", "name") if taken else ("copy",),
                "to import it again as a copy with new ids"
                + (f" under a new name ({t.name!r} is taken)" if taken else ""),
            )
    if s.get(CubeRow, t.cube_id) is not None:
        raise Conflict(
            f"a cube with id {t.cube_id!r} exists in this home already",
            ("cube_id",),
            "to choose another" if t.chose_id else "to import it under a new id",
        )
    if _name_taken(s, t):
        raise Conflict(
            f"user {t.user_id!r} already has a cube named {t.name!r}",
            ("name",),
            "to choose another" if t.chose_name else "to import it under another name",
        )


def _name_taken(s: Session, t: _Target) -> bool:
    stmt = select(CubeRow.id).where(CubeRow.owner_id == t.user_id, CubeRow.name == t.name)
    return s.scalar(stmt) is not None


def _write_rows(
    s: Session,
    zf: zipfile.ZipFile,
    manifest: Manifest,
    cube_id: str,
    ids: dict[str, str] | None,
    settings: Settings,
) -> int:
    """Insert every row under ``cube_id``, with memory ids renewed by ``ids`` for a copy;
    returns how many blob manifests were here already."""
    rules = Rules.of(settings)
    entity_ids: dict[int, int] = {}  # archive entity id -> autoincrement id in this home
    present = 0
    for member in MEMBERS:
        if member.key == "acl":
            continue  # for the record only
        rows: list[dict[str, Any]] = []
        size = 0
        # re-read and re-hashed: a member changed since the scan fails here, and rolls back
        for lineno, raw in member_lines(zf, member.name, manifest.members[member.name], rules.max_line):
            row = read_row(member, raw, f"{member.name} line {lineno}", rules)
            if member.scope == "cube":
                row["cube_id"] = cube_id
            for f in ("entity_id", "src_id", "dst_id"):
                if f in row:
                    row[f] = entity_ids[row[f]]
            if member.key == "memories":
                row["index_state"] = "pending"  # vectors do not travel: the indexer embeds the text
            if ids is not None:
                _renew(row, member.key, ids)
            rows.append(row)
            size += len(raw)
            if len(rows) == BATCH or size > BATCH_BYTES:
                present += _insert(s, member, rows, entity_ids)
                rows, size = [], 0
        present += _insert(s, member, rows, entity_ids) if rows else 0
    return present


def _renew(row: dict[str, Any], key: str, ids: dict[str, str]) -> None:
    """A copy's row: every memory id it holds replaced by the copy's (a purged memory's
    tombstone keeps the old id: there is no memory to give a new one)."""
    for f in ("id", "superseded_by") if key == "memories" else ("memory_id",):
        if row.get(f) is not None:
            row[f] = ids.get(row[f], row[f])
    if key == "memories":
        row["source_ids"] = [ids.get(i, i) for i in row["source_ids"]]


def _insert(s: Session, member: Member, rows: list[dict[str, Any]], entity_ids: dict[int, int]) -> int:
    t = member.table
    if member.key == "entities":
        old = [r.pop("id") for r in rows]
        new = s.scalars(insert(t).returning(t.c.id, sort_by_parameter_order=True), rows).all()
        entity_ids.update(zip(old, new, strict=True))
        return 0
    present = 0
    if member.key == "blobs":  # content-addressed: a blob this home has already is the same blob
        have = set(s.scalars(select(BlobRow.sha256).where(BlobRow.sha256.in_([r["sha256"] for r in rows]))))
        rows, present = [r for r in rows if r["sha256"] not in have], len(have)
    if rows:
        s.execute(insert(t), rows)  # executemany in file order: new audit ids keep the old order
    return present
