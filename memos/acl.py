"""Who may do what: the roles of a cube and the checks every operation runs, defined once.

A cube has one owner; the owner shares it with other users as ``reader`` (search, read,
chat without write-back, export) or ``writer`` (and add, update, delete, purge). Every
operation names its acting user and calls one of these checks inside its transaction.

Answers are chosen so that a stranger learns nothing: a memory in a cube the user has no
access to is :class:`~memos.errors.NotFound`, word for word as an id that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from memos.errors import NotFound, PermissionDenied
from memos.plaintext.validation import check_key
from memos.storage.relational.engine import RelationalStore
from memos.storage.relational.models import AclRow, CubeRow, MemoryRow, UserRow
from memos.types import Role

READ = frozenset({Role.owner, Role.writer, Role.reader})
WRITE = frozenset({Role.owner, Role.writer})
OWNER = frozenset({Role.owner})

#: the cubes a user may read (built once: every search runs it)
CUBES_OF_USER = select(AclRow.cube_id).where(AclRow.user_id == bindparam("user_id"))


def user(s: Session, user_id: object) -> UserRow:
    """The user, or :class:`NotFound` with how to create it."""
    check_key(user_id, "user_id")
    row = s.get(UserRow, user_id)
    if row is None:
        raise NotFound(
            f"unknown user {user_id!r}; create it first (MemOS.add_user, or `memos user add` / `memos init`)"
        )
    return row


def require(s: Session, cube_id: object, user_id: object, allowed: Iterable[Role]) -> Role:
    """``user_id``'s role on ``cube_id``, if it is one of ``allowed``."""
    user(s, user_id)
    check_key(cube_id, "cube_id")
    if s.get(CubeRow, cube_id) is None:
        raise NotFound(f"unknown cube {cube_id!r}")
    acl = s.get(AclRow, (cube_id, user_id))
    if acl is None:
        raise PermissionDenied(f"user {user_id!r} has no access to cube {cube_id!r}; its owner can share it")
    role = Role(acl.role)
    allowed = frozenset(allowed)
    if role not in allowed:
        need = "owner" if allowed == OWNER else "writer"
        raise PermissionDenied(f"user {user_id!r} is {role} of cube {cube_id!r}; this needs {need} access")
    return role


def memory(s: Session, memory_id: object, user_id: str, allowed: Iterable[Role]) -> MemoryRow:
    """The memory, if ``user_id`` holds one of ``allowed`` roles on its cube.

    A user with no access to the cube gets the same answer as for an id that does not
    exist: a stranger learns nothing of a memory, not even which cube holds it."""
    check_key(memory_id, "memory_id")
    row = s.get(MemoryRow, memory_id)
    user(s, user_id)
    if row is None or s.get(AclRow, (row.cube_id, user_id)) is None:
        raise NotFound(f"no memory {memory_id!r} (it may have been purged)")
    require(s, row.cube_id, user_id, allowed)
    return row


def readable_cubes(store: RelationalStore, user_id: str, cube_ids: Sequence[str] | None) -> list[str]:
    """The cubes named (each checked for read access), or every cube ``user_id`` may read."""
    if cube_ids is None and check_key(user_id, "user_id"):
        # one query on a bare connection in the common case (every search); the user is
        # looked up only when it has no cube
        with store.connection() as conn:
            found = list(conn.execute(CUBES_OF_USER, {"user_id": user_id}).scalars())
        if found:
            return found
    with store.read_session() as s:
        user(s, user_id)
        if cube_ids is None:
            return list(s.scalars(CUBES_OF_USER, {"user_id": user_id}))
        if isinstance(cube_ids, str):
            cube_ids = [cube_ids]
        for c in cube_ids:
            require(s, c, user_id, READ)
        return list(dict.fromkeys(cube_ids))


def maintained_cubes(
    s: Session, user_id: str | None, cube_ids: Sequence[str] | None, allowed: Iterable[Role]
) -> list[str]:
    """The cubes a maintenance call covers: the ones named, else every cube of the home
    (no ``user_id``: the operator, e.g. the CLI without ``--user``) or every cube
    ``user_id`` holds one of the ``allowed`` roles on."""
    if isinstance(cube_ids, str):
        cube_ids = [cube_ids]
    if user_id is None:
        if cube_ids is None:
            return list(s.scalars(select(CubeRow.id)))
        for c in cube_ids:
            if s.get(CubeRow, c) is None:
                raise NotFound(f"unknown cube {c!r}")
        return list(dict.fromkeys(cube_ids))
    allowed = frozenset(allowed)
    if cube_ids is None:
        return list(
            s.scalars(
                select(AclRow.cube_id).where(
                    AclRow.user_id == user_id, AclRow.role.in_([str(r) for r in allowed])
                )
            )
        )
    for c in cube_ids:
        require(s, c, user_id, allowed)
    return list(dict.fromkeys(cube_ids))
