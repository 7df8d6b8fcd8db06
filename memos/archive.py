"""Portable cubes: the ``.memcube`` archive (format version 1).

A ``.memcube`` is a zip file holding ``manifest.json`` and one JSON Lines member per
table slice of the cube (``memories.jsonl``, ``edges.jsonl``, … — see :data:`MEMBERS`).
The manifest records the format and its version, the package and embedder that wrote
it, the cube, row counts, and the sha256 and size of every other member. Rows are plain
JSON with ISO-8601 UTC times; nothing is ever unpickled. Blob files will live under
``blobs/sha256/<hex>``; names of that shape are accepted and verified already.

Why zip and not tar: a zip's central directory lists every member's name, type and
declared size before a byte is decompressed, so the archive can be judged up front and
members read in any order (entities before edges, whatever order they were written in).
A tar is read front to back, its headers sit between the data, and it has first-class
symlink, hard-link and device members and a long history of extraction traversal bugs.
Nothing is ever extracted to disk: members are streamed from the open file.

Import is all or nothing. Every check runs before anything is written: entry names and
types, the manifest and format version, that the members are exactly those listed with
their sizes and checksums, size limits (declared sizes first, then enforced while
reading, against zip bombs), every row's keys and types and what it refers to. One
transaction then writes the cube, re-hashing what it reads, so an archive changed
between the two passes is rolled back rather than half imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import JSON, Column, Float, Integer, String, Table, insert, select
from sqlalchemy.exc import IntegrityError

import memos
from memos.errors import AlreadyExists, ArchiveError, InvalidInput
from memos.ingest import MAX_KEY_CHARS, check_id
from memos.storage.relational.models import (
    AclRow,
    AuditRow,
    BlobRow,
    CubeRow,
    EdgeRow,
    EntityRow,
    MemoryEntityRow,
    MemoryRow,
    MemoryVersionRow,
    MessageRow,
    SessionRow,
    UTCDateTime,
)
from memos.types import Cube, MemoryKind, MemoryState, MemoryType, Role

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from memos.core import MemOS

log = logging.getLogger(__name__)

FORMAT = "memcube"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST = "manifest.json"
_MANIFEST_MAX = 16 * 1024**2  # parsed whole, in memory: its own cap, whatever the member limit
_CHUNK = 1024**2  # bytes read from a member at a time
_BATCH = 500  # rows per INSERT and per IN (…) check: well under SQLite's parameter limit
_READ = {Role.owner, Role.writer, Role.reader}
_BLOB_MEMBER = re.compile(r"blobs/sha256/[0-9a-f]{64}")
_LIST_FIELDS = frozenset({"tags", "source_ids"})  # JSON columns holding arrays, not objects


_Enums = dict[str, type[StrEnum]]  # columns whose values must be one of an enum's


@dataclass(frozen=True)
class _Member:
    """One JSONL member: a table slice and the columns each line carries."""

    key: str  # the table; the member is ``<key>.jsonl``
    table: Table
    fields: tuple[str, ...]
    scope: str  # "cube": rows with the cube's cube_id; "memory": rows of the cube's memories
    order: tuple[str, ...]
    enums: _Enums = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.key}.jsonl"


def _member(
    model: type[Any], scope: str, order: str, drop: str = "cube_id", enums: _Enums | None = None
) -> _Member:
    # Every column travels except ``drop``: the cube id (the archive is one cube; import
    # sets the new one) and surrogate or derived values (autoincrement ids other than the
    # entities', which graph rows refer to; the index state). tests/test_archive.py pins
    # the resulting layout, so a schema change cannot change format 1 unnoticed.
    table = cast(Table, model.__table__)
    fields = tuple(c.key for c in table.c if c.key not in drop.split())
    return _Member(table.name.removeprefix("cube_"), table, fields, scope, tuple(order.split()), enums or {})


_LIFECYCLE: _Enums = {"kind": MemoryKind, "type": MemoryType, "state": MemoryState}
#: import order: each member comes after the members its rows refer to
MEMBERS: tuple[_Member, ...] = (
    _member(MemoryRow, "cube", "recorded_at id", "cube_id index_state", _LIFECYCLE),
    _member(MemoryVersionRow, "memory", "memory_id version", "id"),
    _member(EntityRow, "cube", "id"),
    _member(MemoryEntityRow, "memory", "memory_id entity_id", ""),
    _member(EdgeRow, "cube", "id", "id cube_id"),
    _member(SessionRow, "cube", "created_at id"),
    _member(MessageRow, "cube", "id", "id cube_id"),
    _member(AuditRow, "cube", "id", "id cube_id"),
    # who had access, for the record: import grants nobody but the importing owner
    _member(AclRow, "cube", "granted_at user_id", enums={"role": Role}),
    _member(BlobRow, "cube", "sha256"),
)
_NAMES = {m.name for m in MEMBERS}
_REFS = {"memory_id": "memories", "entity_id": "entities", "src_id": "entities", "dst_id": "entities"}


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class _CubeInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=200)
    description: str | None
    owner_id: str = Field(max_length=128)
    created_at: AwareDatetime
    settings: dict[str, Any]


class Manifest(BaseModel):
    """``manifest.json``, the one file a reader trusts first (strict; JSON input only).

    Unknown top-level keys are ignored on purpose: informational additions need no new
    format version. Whatever changes what the rows mean needs one.
    """

    model_config = ConfigDict(strict=True)

    format: Literal["memcube"] = "memcube"
    format_version: int = FORMAT_VERSION
    package_version: str
    created_at: AwareDatetime
    embedder_id: str | None
    cube: _CubeInfo
    counts: dict[str, int]
    members: dict[str, _Entry]


# ---------------------------------------------------------------------------- export
def export_cube(mos: MemOS, cube_id: str, path: Path, *, user_id: str) -> Path:
    """Write ``cube_id`` to ``path`` as a ``.memcube`` archive; needs read access.

    Rows stream from one read transaction (a consistent snapshot) into a temporary file
    beside ``path``, which replaces ``path`` only when complete.
    """
    path = Path(path)
    if path.is_dir() or not path.parent.is_dir():
        raise InvalidInput(f"cannot write {path}: give a file path in an existing folder")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        mos.access.flush()
        with mos.store.session() as s, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            mos._require(s, cube_id, user_id, _READ)
            cube = s.get(CubeRow, cube_id)
            assert cube is not None  # _require checked it
            now = mos.clock()
            counts: dict[str, int] = {}
            members: dict[str, _Entry] = {}
            for member in MEMBERS:
                counts[member.key], members[member.name] = _write_member(s, zf, member, cube_id, now)
            manifest = Manifest(
                package_version=memos.__version__,
                created_at=now,
                embedder_id=mos.embedder.id,
                cube=_CubeInfo(**{f: getattr(cube, f) for f in _CubeInfo.model_fields}),
                counts=counts,
                members=members,
            )
            zf.writestr(_zipinfo(MANIFEST, now), manifest.model_dump_json(indent=2))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    event = AuditRow(
        ts=mos.clock(), actor=user_id, cube_id=cube_id, action="export", details={"counts": counts}
    )
    with mos.store.session() as s:  # who took a copy of the cube, and when, is worth knowing later
        s.add(event)
    log.info("exported cube %s to %s (%s)", cube_id, path, counts)
    return path


def _write_member(
    s: Session, zf: zipfile.ZipFile, member: _Member, cube_id: str, now: datetime
) -> tuple[int, _Entry]:
    t = member.table
    stmt = select(*(t.c[f] for f in member.fields))
    if member.scope == "cube":
        stmt = stmt.where(t.c.cube_id == cube_id)
    else:
        mem = cast(Table, MemoryRow.__table__)
        stmt = stmt.join(mem, mem.c.id == t.c.memory_id).where(mem.c.cube_id == cube_id)
    stmt = stmt.order_by(*(t.c[f] for f in member.order)).execution_options(yield_per=_BATCH)
    digest, size, count = hashlib.sha256(), 0, 0
    with zf.open(_zipinfo(member.name, now), "w", force_zip64=True) as fh:
        for part in s.execute(stmt).partitions():
            rows = ({k: _encode(v) for k, v in r._mapping.items()} for r in part)
            data = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows).encode("utf-8")
            fh.write(data)
            digest.update(data)
            size += len(data)
            count += len(part)
    return count, _Entry(sha256=digest.hexdigest(), bytes=size)


def _zipinfo(name: str, now: datetime) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=now.astimezone(UTC).timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16  # say "plain file", as import requires
    return info


def _encode(value: Any) -> Any:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


# ---------------------------------------------------------------------------- import
def import_cube(
    mos: MemOS, path: Path, *, user_id: str, cube_id: str | None = None, name: str | None = None
) -> Cube:
    """Load a ``.memcube`` as a new cube owned by ``user_id`` (see the module docstring)."""
    with _open(Path(path)) as zf:
        manifest = _read_manifest(zf, mos.settings.archive_max_member_bytes)
        memory_ids = _scan(zf, manifest)
        src = manifest.cube
        new_id = check_id(cube_id, "cube_id", MAX_KEY_CHARS) if cube_id is not None else src.id
        if len(new_id) > 128:  # check_id allows 200; the cubes.id column holds 128
            raise InvalidInput("cube_id must be at most 128 characters")
        new_name = check_id(name if name is not None else src.name, "cube name", MAX_KEY_CHARS)
        with mos.store.session() as s:  # fail fast on a name clash, before reading a large archive
            _check_target(mos, s, set(), user_id, new_id, new_name, cube_id is not None)
        now = mos.clock()
        # what was imported from where: the archive's own facts, and what this home did differently
        details: dict[str, Any] = {
            "archive": manifest.model_dump(mode="json", exclude={"cube", "members"}),
            "source_cube": src.model_dump(mode="json", include={"id", "name", "owner_id"}),
        }
        if manifest.embedder_id != mos.embedder.id:
            details["reembedded_with"] = mos.embedder.id  # vectors never travel: the index embeds the text
        cube = CubeRow(**{**src.model_dump(), "id": new_id, "name": new_name, "owner_id": user_id})
        acl = AclRow(cube_id=new_id, user_id=user_id, role=Role.owner, granted_at=now, granted_by=user_id)
        with mos._write_lock:
            try:
                with mos.store.session() as s:
                    _check_target(mos, s, memory_ids, user_id, new_id, new_name, cube_id is not None)
                    s.add(cube)
                    s.flush()
                    s.add(acl)
                    details["blobs_already_present"] = _write_rows(s, zf, manifest, new_id)
                    s.add(AuditRow(ts=now, actor=user_id, cube_id=new_id, action="import", details=details))
            except IntegrityError as exc:
                raise ArchiveError(
                    f"the archive's rows conflict with each other or this home: {exc.orig}"
                ) from exc
        mos.graphs.invalidate(new_id)
        mos.indexer.sync()
    log.info("imported %s as cube %s (%s)", path, new_id, manifest.counts)
    fields = ("id", "name", "owner_id", "created_at", "description")
    return Cube(**{f: getattr(cube, f) for f in fields}, role=Role.owner)


def _open(path: Path) -> zipfile.ZipFile:
    """Open the zip and reject entries that are unsafe whatever the manifest says."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError as exc:
        raise ArchiveError(f"no archive at {path}") from exc
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"{path} is not a .memcube archive (a .memcube is a zip file): {exc}") from exc
    seen: set[str] = set()
    for info in zf.infolist():
        name = info.orig_filename  # as stored, before zipfile's own clean-up
        parts = name.split("/")
        problem = None
        if name[:1] == "/" or any(c in name for c in "\\:\0") or {"", ".", ".."} & set(parts):
            problem = "has an unsafe path (absolute, '..', backslash, colon or empty part)"
        elif info.is_dir() or stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG):
            problem = "is a directory, symlink or special file; a .memcube holds plain files only"
        elif info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            problem = "is encrypted or uses an unsupported compression"
        elif name in seen:
            problem = "appears twice"
        if problem:
            zf.close()
            raise ArchiveError(f"archive member {name!r} {problem}; refusing the archive")
        seen.add(name)
    return zf


def _read_manifest(zf: zipfile.ZipFile, limit: int) -> Manifest:
    """Parse and check the manifest, and that the zip holds exactly the members it lists."""
    names = set(zf.namelist())
    if MANIFEST not in names:
        raise ArchiveError(f"the archive has no {MANIFEST}: it is not a .memcube, or it is damaged")
    if zf.getinfo(MANIFEST).file_size > _MANIFEST_MAX:
        raise ArchiveError(f"{MANIFEST} is larger than the limit of {_MANIFEST_MAX:,} bytes")
    raw = b"".join(_chunks(zf, MANIFEST, _MANIFEST_MAX))
    head = _json(raw, MANIFEST)
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ArchiveError(f"{MANIFEST} does not describe a .memcube (its format must be {FORMAT!r})")
    version = head.get("format_version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:  # before the layout, which may differ
        raise ArchiveError(
            f"archive format_version {version!r} is not supported by memos {memos.__version__}, which reads "
            f"format_version {', '.join(map(str, SUPPORTED_VERSIONS))}; a newer memos may read it"
        )
    try:
        m = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise ArchiveError(f"{MANIFEST} is malformed: {problems}") from exc
    if set(m.counts) != {mb.key for mb in MEMBERS}:
        raise ArchiveError(f"{MANIFEST}: 'counts' must give the rows of each of {[mb.key for mb in MEMBERS]}")
    if unknown := sorted(n for n in set(m.members) - _NAMES if not _BLOB_MEMBER.fullmatch(n)):
        raise ArchiveError(f"{MANIFEST} lists an unknown member {unknown[0]!r}")
    if unlisted := sorted(names - {MANIFEST} - set(m.members)):
        raise ArchiveError(
            f"archive member {unlisted[0]!r} is not listed in {MANIFEST}; refusing unlisted content"
        )
    if missing := sorted(_NAMES - set(m.members)) + sorted(set(m.members) - names):
        raise ArchiveError(f"archive member {missing[0]!r} is missing")
    for name, entry in m.members.items():
        declared = zf.getinfo(name).file_size  # judged before a byte is inflated
        if max(declared, entry.bytes) > limit:
            raise ArchiveError(
                f"archive member {name!r} is {max(declared, entry.bytes):,} bytes, over the "
                f"limit of {limit:,} (setting archive_max_member_bytes)"
            )
        if declared != entry.bytes:
            raise ArchiveError(
                f"archive member {name!r} is {declared:,} bytes, {MANIFEST} says {entry.bytes:,}: "
                "the archive was modified or damaged"
            )
    return m


def _chunks(zf: zipfile.ZipFile, name: str, cap: int) -> Iterator[bytes]:
    """A member's bytes, never more than ``cap`` whatever its header claims."""
    got = 0
    try:
        with zf.open(name) as fh:
            while chunk := fh.read(_CHUNK):
                got += len(chunk)
                if got > cap:
                    raise ArchiveError(f"archive member {name!r} holds more than {cap:,} bytes; refusing it")
                yield chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ArchiveError(
            f"archive member {name!r} is damaged and fails its checksum ({exc}): "
            "the archive was modified or truncated"
        ) from exc


def _lines(zf: zipfile.ZipFile, name: str, entry: _Entry) -> Iterator[tuple[int, bytes]]:
    """(number, bytes) of each line; after the last, raises if the sha256 or size is off."""
    sha, size = entry.sha256, entry.bytes
    digest, got, lineno, parts = hashlib.sha256(), 0, 0, []
    for chunk in _chunks(zf, name, size):
        digest.update(chunk)
        got += len(chunk)
        pieces = chunk.split(b"\n")
        parts.append(pieces[0])
        for piece in pieces[1:]:  # joining only at line ends keeps a long line linear
            lineno += 1
            yield lineno, b"".join(parts)
            parts = [piece]
    if any(parts):
        yield lineno + 1, b"".join(parts)
    if got != size or digest.hexdigest() != sha:
        raise ArchiveError(
            f"archive member {name!r} fails its checksum (sha256 {digest.hexdigest()}, "
            f"{MANIFEST} says {sha}): the archive was modified or damaged"
        )


def _json(raw: bytes, where: str) -> Any:
    def constant(word: str) -> Any:  # NaN and Infinity are not JSON
        raise ValueError(f"{word} is not valid JSON")

    try:
        return json.loads(raw, parse_constant=constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{where} is not valid JSON: {exc}") from exc


def _row(member: _Member, raw: bytes, where: str) -> dict[str, Any]:
    """One JSONL line as column values, or ArchiveError saying what is wrong with it."""
    obj = _json(raw, where)
    if not isinstance(obj, dict):
        raise ArchiveError(f"{where} must be a JSON object, got {type(obj).__name__}")
    missing, unknown = [f for f in member.fields if f not in obj], sorted(set(obj) - set(member.fields))
    if missing or unknown:
        raise ArchiveError(
            f"{where} lacks keys {missing} or has unknown keys {unknown} (format {FORMAT_VERSION})"
        )
    row = {f: _value(member.table.c[f], obj[f], f"{where}: {f!r}") for f in member.fields}
    for f, enum in member.enums.items():
        if row[f] not in {e.value for e in enum}:
            raise ArchiveError(f"{where}: {f!r} is {row[f]!r}, not one of {[e.value for e in enum]}")
    return row


def _value(col: Column[Any], v: Any, where: str) -> Any:
    """Check one JSON value against its column; times come back as datetimes."""
    t = col.type
    if v is None:
        ok = col.nullable
    elif isinstance(t, UTCDateTime):
        try:
            dt = datetime.fromisoformat(v) if isinstance(v, str) else None
        except ValueError:
            dt = None
        if dt is None or dt.tzinfo is None:  # a naive time would be read as UTC: refuse to guess
            raise ArchiveError(f"{where} must be an ISO-8601 time with a UTC offset, got {str(v)[:40]!r}")
        return dt.astimezone(UTC)
    elif isinstance(t, JSON):
        ok = isinstance(v, list if col.key in _LIST_FIELDS else dict)
    elif isinstance(t, Integer):
        ok = type(v) is int
    elif isinstance(t, Float):
        ok = type(v) in (int, float) and math.isfinite(v)
        v = float(v) if ok else v
    elif isinstance(t, String):
        ok = isinstance(v, str) and len(v) <= (t.length or len(v))
    else:  # a column type format 1 does not know: the schema changed without a new format version
        raise AssertionError(f"no archive encoding for {col.table.name}.{col.key} ({t!r})")
    if not ok:
        want = "not null" if v is None else f"a {t.__class__.__name__.lower()} value that fits the column"
        raise ArchiveError(f"{where} must be {want}, got {str(v)[:80]!r}")
    return v


def _scan(zf: zipfile.ZipFile, manifest: Manifest) -> set[str]:
    """Read every row once, writing nothing; check each row and what it refers to.

    A member's first bad row is reported only once its checksum has been verified
    (``_lines`` raises after the last line), so a damaged archive is called damaged
    instead of being blamed on whichever line the damage happened to break.
    Returns the archive's memory ids.
    """
    ids: dict[str, set[Any]] = {"memories": set(), "entities": set()}
    for member in MEMBERS:
        error: ArchiveError | None = None
        n = 0
        for lineno, raw in _lines(zf, member.name, manifest.members[member.name]):
            n += 1
            where = f"{member.name} line {lineno}"
            try:
                if error is None:
                    row = _row(member, raw, where)
                    if member.key in ids:
                        if row["id"] in ids[member.key]:
                            raise ArchiveError(f"{where}: id {row['id']!r} appears twice")
                        ids[member.key].add(row["id"])
                    # audit events may name purged memories (tombstones); other rows must resolve
                    for f in () if member.key == "audit_events" else _REFS.keys() & set(row):
                        if row[f] not in ids[_REFS[f]]:
                            raise ArchiveError(f"{where}: {f} {row[f]!r} is not in {_REFS[f]}.jsonl")
            except ArchiveError as exc:
                error = exc
        if error is not None:
            raise error
        if manifest.counts[member.key] != n:
            raise ArchiveError(
                f"{MANIFEST} counts {manifest.counts[member.key]} rows in {member.name}, not {n}"
            )
    for name, entry in manifest.members.items():
        if _BLOB_MEMBER.fullmatch(name):  # not imported yet (blob files come later), but verified
            for _ in _lines(zf, name, entry):
                pass
    return ids["memories"]


def _check_target(
    mos: MemOS, s: Session, memory_ids: set[str], user_id: str, cube_id: str, name: str, chosen: bool
) -> None:
    """Refuse, before writing anything, what would collide with this home."""
    mos._user(s, user_id)
    if s.get(CubeRow, cube_id) is not None:
        hint = "choose another" if chosen else "pass cube_id='…' to import it under a new id"
        raise AlreadyExists(f"a cube with id {cube_id!r} exists in this home already; {hint}")
    if s.scalar(select(CubeRow.id).where(CubeRow.owner_id == user_id, CubeRow.name == name)) is not None:
        raise AlreadyExists(
            f"user {user_id!r} already has a cube named {name!r}; pass name='…' to import it "
            "under another name"
        )
    ids = sorted(memory_ids)
    for start in range(0, len(ids), _BATCH):
        clash = s.scalar(select(MemoryRow.id).where(MemoryRow.id.in_(ids[start : start + _BATCH])).limit(1))
        if clash is not None:  # memory ids are kept, so one archive can live in a home only once
            raise AlreadyExists(
                f"memory {clash} of this archive exists in this home already (it was imported "
                "before); delete that cube to import the archive again"
            )


def _write_rows(s: Session, zf: zipfile.ZipFile, manifest: Manifest, cube_id: str) -> int:
    """Insert every row under ``cube_id``; returns how many blob manifests were here already."""
    entity_ids: dict[int, int] = {}  # archive entity id -> autoincrement id in this home
    present = 0
    for member in MEMBERS:
        if member.key == "acl":
            continue  # for the record only
        rows: list[dict[str, Any]] = []
        # re-read and re-hashed: a member changed since the scan fails here, and rolls back
        for lineno, raw in _lines(zf, member.name, manifest.members[member.name]):
            row = _row(member, raw, f"{member.name} line {lineno}")
            if member.scope == "cube":
                row["cube_id"] = cube_id
            for f in ("entity_id", "src_id", "dst_id"):
                if f in row:
                    row[f] = entity_ids[row[f]]
            if member.key == "memories":
                row["index_state"] = "pending"  # vectors do not travel: the indexer embeds the text
            rows.append(row)
            if len(rows) == _BATCH:
                present += _insert(s, member, rows, entity_ids)
                rows = []
        present += _insert(s, member, rows, entity_ids) if rows else 0
    return present


def _insert(s: Session, member: _Member, rows: list[dict[str, Any]], entity_ids: dict[int, int]) -> int:
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
