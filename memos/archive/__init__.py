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
reading, against zip bombs), every row's keys and types and what it refers to. Every
row is also checked as ``add`` checks what it stores, with the same functions and this
home's settings (text length, metadata and tags, valid Unicode, finite numbers), so an
archive cannot carry in what ``add`` would refuse; a line longer than any such row can be
is refused while it streams, before it is held whole. One transaction then writes the
cube, re-hashing what it reads, so an archive changed between the two passes is rolled
back rather than half imported. Memory ids are kept, so an archive lives in a home once;
``copy=True`` imports it again with new ids.

Export writes a temporary file beside the target and renames it into place when complete.
It replaces an existing file only when asked (``overwrite=True``), and never anything that
is not a regular file.

Modules: :mod:`~memos.archive.format` (members, manifest), :mod:`~memos.archive.export`,
:mod:`~memos.archive.reading` (every check, writing nothing), :mod:`~memos.archive.importing`;
chat logs: :mod:`~memos.archive.chatlog` (the file formats), :mod:`~memos.archive.chat_import`
(checked whole, then added in batches). What is in the way of an export or import raises
:class:`memos.errors.Conflict`.
"""

from memos.archive.chat_import import ChatLog, import_chat, read_chat
from memos.archive.export import export_cube
from memos.archive.format import FORMAT, FORMAT_VERSION, MANIFEST, MEMBERS, Manifest
from memos.archive.importing import import_cube
from memos.archive.reading import verify
from memos.errors import Conflict

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "MEMBERS",
    "ChatLog",
    "Conflict",
    "Manifest",
    "export_cube",
    "import_chat",
    "import_cube",
    "read_chat",
    "verify",
]
