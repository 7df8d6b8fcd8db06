"""Reading a ``.memcube`` without writing anything: the zip's entries, the manifest, and
every row, checked as ``add`` checks what it stores (see :mod:`memos.archive`)."""

from __future__ import annotations

import hashlib
import json
import math
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import JSON, Column, Float, Integer, String

from memos.archive.format import (
    BLOB_MEMBER,
    CHUNK,
    FORMAT,
    FORMAT_VERSION,
    LIST_FIELDS,
    MANIFEST,
    MANIFEST_MAX,
    MEMBERS,
    NAMES,
    REFS,
    SUPPORTED_VERSIONS,
    UNBOUNDED,
    Entry,
    Manifest,
    Member,
)
from memos.config import Limits
from memos.errors import ArchiveError, InvalidInput
from memos.plaintext.validation import check_json, check_metadata, check_tags, check_text
from memos.storage.relational.models import UTCDateTime
from memos.version import __version__

if TYPE_CHECKING:
    from memos.config import Settings


def open_archive(path: Path) -> zipfile.ZipFile:
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
    if zf.getinfo(MANIFEST).file_size > MANIFEST_MAX:
        raise ArchiveError(f"{MANIFEST} is larger than the limit of {MANIFEST_MAX:,} bytes")
    raw = b"".join(_chunks(zf, MANIFEST, MANIFEST_MAX))
    head = _json(raw, MANIFEST)
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ArchiveError(f"{MANIFEST} does not describe a .memcube (its format must be {FORMAT!r})")
    version = head.get("format_version")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:  # before the layout, which may differ
        raise ArchiveError(
            f"archive format_version {version!r} is not supported by memos {__version__}, which reads "
            f"format_version {', '.join(map(str, SUPPORTED_VERSIONS))}; a newer memos may read it"
        )
    try:
        m = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise ArchiveError(f"{MANIFEST} is malformed: {problems}") from exc
    if set(m.counts) != {mb.key for mb in MEMBERS}:
        raise ArchiveError(f"{MANIFEST}: 'counts' must give the rows of each of {[mb.key for mb in MEMBERS]}")
    if unknown := sorted(n for n in set(m.members) - NAMES if not BLOB_MEMBER.fullmatch(n)):
        raise ArchiveError(f"{MANIFEST} lists an unknown member {unknown[0]!r}")
    if unlisted := sorted(names - {MANIFEST} - set(m.members)):
        raise ArchiveError(
            f"archive member {unlisted[0]!r} is not listed in {MANIFEST}; refusing unlisted content"
        )
    if missing := sorted(NAMES - set(m.members)) + sorted(set(m.members) - names):
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
            while chunk := fh.read(CHUNK):
                got += len(chunk)
                if got > cap:
                    raise ArchiveError(f"archive member {name!r} holds more than {cap:,} bytes; refusing it")
                yield chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ArchiveError(
            f"archive member {name!r} is damaged and fails its checksum ({exc}): "
            "the archive was modified or truncated"
        ) from exc


def member_lines(zf: zipfile.ZipFile, name: str, entry: Entry, max_line: int) -> Iterator[tuple[int, bytes]]:
    """(number, bytes) of each line; after the last, raises if the sha256 or size is off.

    Members stream in chunks; a line longer than ``max_line`` is refused once that much
    of it has been read, so a member that inflates to one huge line is never held whole."""
    digest, got, lineno, pending = hashlib.sha256(), 0, 0, 0
    parts: list[bytes] = []
    for chunk in _chunks(zf, name, entry.bytes):
        digest.update(chunk)
        got += len(chunk)
        pieces = chunk.split(b"\n")
        for piece in pieces[:-1]:  # joining only at line ends keeps a long line linear
            lineno += 1
            yield lineno, b"".join([*parts, piece])
            parts, pending = [], 0
        parts.append(pieces[-1])
        pending += len(pieces[-1])
        if pending > max_line:
            raise ArchiveError(
                f"{name} line {lineno + 1} is longer than {max_line:,} bytes, more than any row within "
                "this home's limits (max_text_chars, max_metadata_bytes, max_tags) can be; refusing it"
            )
    if pending:
        yield lineno + 1, b"".join(parts)
    _check_sum(name, entry, digest, got)


def _verified(zf: zipfile.ZipFile, name: str, entry: Entry) -> None:
    """Read a whole member for its checksum alone (no lines, no rows)."""
    digest, got = hashlib.sha256(), 0
    for chunk in _chunks(zf, name, entry.bytes):
        digest.update(chunk)
        got += len(chunk)
    _check_sum(name, entry, digest, got)


def _check_sum(name: str, entry: Entry, digest: Any, got: int) -> None:
    if got != entry.bytes or digest.hexdigest() != entry.sha256:
        raise ArchiveError(
            f"archive member {name!r} fails its checksum (sha256 {digest.hexdigest()}, "
            f"{MANIFEST} says {entry.sha256}): the archive was modified or damaged"
        )


#: any JSON an archive holds: finite numbers, Unicode strings, nesting SQLAlchemy can write back
_ANY_JSON = Limits(metadata_bytes=1 << 62, metadata_depth=200)


def _json(raw: bytes, where: str) -> Any:
    def constant(word: str) -> Any:  # NaN and Infinity are not JSON
        raise ValueError(f"{word} is not valid JSON")

    try:
        obj = json.loads(raw, parse_constant=constant)
        check_json(obj, where, _ANY_JSON, named=False)  # 1e999 parses as inf; "\ud800" as a lone surrogate
    except InvalidInput as exc:
        raise ArchiveError(str(exc)) from exc
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ArchiveError(f"{where} is not valid JSON: {exc}") from exc
    return obj


@dataclass(frozen=True)
class Rules:
    """What this home accepts: the settings ``add`` checks against, and the longest line
    (12 bytes a character, the most JSON escaping takes, for the text and tags; 3 per UTF-8
    byte of metadata; and room for the columns no setting bounds, such as a fact's sources)."""

    max_text_chars: int
    limits: Limits
    max_line: int

    @classmethod
    def of(cls, settings: Settings) -> Rules:
        lim = settings.limits
        bounded = 12 * settings.max_text_chars + 3 * lim.metadata_bytes + lim.tags * (12 * lim.tag_chars + 4)
        return cls(settings.max_text_chars, lim, min(bounded + UNBOUNDED, settings.archive_max_member_bytes))


def read_row(member: Member, raw: bytes, where: str, rules: Rules) -> dict[str, Any]:
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
    try:  # what add refuses, import refuses: the same checks, against this home's settings
        if member.key in ("memories", "memory_versions"):
            check_text(row["text"], rules.max_text_chars)
            check_metadata(row["metadata"], limits=rules.limits)
            row["tags"] = check_tags(row["tags"], limits=rules.limits)
            if not 0 <= row["importance"] <= 1:
                raise InvalidInput(f"importance is {row['importance']}, not between 0 and 1")
        if member.key == "memories" and not all(isinstance(i, str) for i in row["source_ids"]):
            raise InvalidInput("source_ids must be a list of memory ids")
        if member.key == "messages":
            check_text(row["content"], rules.max_text_chars, "content")
    except InvalidInput as exc:
        raise ArchiveError(f"{where}: {exc}; this home's add would refuse it") from exc
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
        ok = isinstance(v, list if col.key in LIST_FIELDS else dict)
    elif isinstance(t, Integer):
        ok = type(v) is int and -(2**31) <= v < 2**31  # PostgreSQL's integer
    elif isinstance(t, Float):
        ok = type(v) in (int, float) and math.isfinite(v)
        v = float(v) if ok else v
    elif isinstance(t, String):
        ok = isinstance(v, str) and len(v) <= (t.length or len(v))
    else:  # a column type format 1 does not know: the schema changed without a new format version
        raise AssertionError(f"no archive encoding for {col.table.name}.{col.key} ({t!r})")
    if not ok:
        kind = t.__class__.__name__.lower()
        want = (
            "not null"
            if v is None
            else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} value that fits the column"
        )
        raise ArchiveError(f"{where} must be {want}, got {str(v)[:80]!r}")
    return v


def _scan(zf: zipfile.ZipFile, manifest: Manifest, settings: Settings) -> set[str]:
    """Read every row once, writing nothing; check each row and what it refers to.

    The scan stops at a member's first bad row, then reads the member through for its
    checksum: a damaged archive is called damaged instead of being blamed on whichever
    line the damage happened to break. Returns the archive's memory ids.
    """
    rules = Rules.of(settings)
    ids: dict[str, set[Any]] = {"memories": set(), "entities": set()}
    for member in MEMBERS:
        entry, count, n = manifest.members[member.name], manifest.counts[member.key], 0
        try:
            for lineno, raw in member_lines(zf, member.name, entry, rules.max_line):
                n += 1
                where = f"{member.name} line {lineno}"
                if n > count:
                    raise ArchiveError(f"{MANIFEST} counts {count} rows in {member.name}, it holds more")
                row = read_row(member, raw, where, rules)
                if member.key in ids:
                    if row["id"] in ids[member.key]:
                        raise ArchiveError(f"{where}: id {row['id']!r} appears twice")
                    ids[member.key].add(row["id"])
                # audit events may name purged memories (tombstones); other rows must resolve
                for f in () if member.key == "audit_events" else REFS.keys() & set(row):
                    if row[f] not in ids[REFS[f]]:
                        raise ArchiveError(f"{where}: {f} {row[f]!r} is not in {REFS[f]}.jsonl")
        except ArchiveError:
            _verified(zf, member.name, entry)
            raise
        if count != n:
            raise ArchiveError(f"{MANIFEST} counts {count} rows in {member.name}, not {n}")
    for name, entry in manifest.members.items():
        if BLOB_MEMBER.fullmatch(name):  # not imported yet (blob files come later), but verified
            _verified(zf, name, entry)
    return ids["memories"]


def verify(path: Path, settings: Settings) -> Manifest:
    """Check an archive as import does, writing nothing; returns its manifest."""
    with open_archive(Path(path)) as zf:
        return verify_zip(zf, settings)[0]


def verify_zip(zf: zipfile.ZipFile, settings: Settings) -> tuple[Manifest, set[str]]:
    """:func:`verify` on an open archive: its manifest, and the memory ids it holds."""
    manifest = _read_manifest(zf, settings.archive_max_member_bytes)
    return manifest, _scan(zf, manifest, settings)
