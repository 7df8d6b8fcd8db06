"""Users, cubes and sharing: who exists, which cubes they own, and who else may read or
write them (the roles themselves are :mod:`memos.acl`'s).

:class:`Cubes` is the service :class:`~memos.core.MemOS` delegates ``add_user``,
``create_cube``, ``share_cube`` and the rest to. Every change is audited through
:meth:`memos.home.Home.recording`. Deleting a cube deletes its rows in dependency order
and retires what the artifact services built for it (KV prefixes, LoRA adapters): their
rows and blob files go, and each is published as ``artifact_retired``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from memos import acl
from memos.errors import AlreadyExists, InvalidInput, NotFound
from memos.events import Event, EventKind
from memos.home import Home
from memos.plaintext.validation import MAX_KEY_CHARS, check_id
from memos.storage.relational.models import (
    AclRow,
    CubeRow,
    EdgeRow,
    EntityRow,
    MemoryEntityRow,
    MemoryRow,
    MemoryVersionRow,
    MessageRow,
    SessionRow,
    UserRow,
)
from memos.types import Cube, Role, Share, User

#: deletes what an artifact service keeps for a cube (rows and blob files), inside the cube's
#: delete transaction, ``(session, cube_id, actor)``; returns the ``artifact_retired`` events
#: of what it retired, published once that transaction committed
BlobDeleter = Callable[[Session, str, str | None], Sequence[Event]]


class Cubes:
    """``MemOS.add_user`` … ``shares``: users, cubes and grants."""

    def __init__(self, home: Home, *, blob_deleters: Sequence[BlobDeleter] = ()) -> None:
        self.home = home
        self.blob_deleters = tuple(blob_deleters)

    def add_user(self, user_id: str, name: str | None = None) -> User:
        user_id = check_id(user_id, "user_id", MAX_KEY_CHARS)
        with self.home.recording() as rec, self.home.store.session() as s:
            if s.get(UserRow, user_id) is not None:
                raise AlreadyExists(f"user {user_id!r} exists already")
            row = UserRow(id=user_id, name=name or user_id, created_at=self.home.clock())
            s.add(row)
            rec.record(s, Event(EventKind.user_added, row.created_at, user_id, None))
        return User(id=row.id, name=row.name, created_at=row.created_at)

    def get_user(self, user_id: str) -> User:
        with self.home.store.session() as s:
            row = acl.user(s, user_id)
            return User(id=row.id, name=row.name, created_at=row.created_at)

    def list_users(self) -> list[User]:
        with self.home.store.session() as s:
            return [
                User(id=r.id, name=r.name, created_at=r.created_at)
                for r in s.scalars(select(UserRow).order_by(UserRow.created_at))
            ]

    # ------------------------------------------------------------------ cubes
    def create_cube(
        self, user_id: str, name: str, *, cube_id: str | None = None, description: str | None = None
    ) -> Cube:
        """Create a cube owned by ``user_id``. Names are unique per owner."""
        name = check_id(name, "cube name", MAX_KEY_CHARS)
        cube_id = check_id(cube_id, "cube_id", MAX_KEY_CHARS) if cube_id is not None else str(uuid.uuid4())
        now = self.home.clock()
        with self.home.recording() as rec, self.home.store.session() as s:
            acl.user(s, user_id)
            if s.get(CubeRow, cube_id) is not None:
                raise AlreadyExists(f"a cube with id {cube_id!r} exists already")
            if s.scalar(select(CubeRow).where(CubeRow.owner_id == user_id, CubeRow.name == name)):
                raise AlreadyExists(f"user {user_id!r} already has a cube named {name!r}")
            s.add(
                CubeRow(
                    id=cube_id,
                    name=name,
                    owner_id=user_id,
                    description=description,
                    created_at=now,
                    settings={},
                )
            )
            s.flush()
            s.add(
                AclRow(cube_id=cube_id, user_id=user_id, role=Role.owner, granted_at=now, granted_by=user_id)
            )
            rec.record(s, Event(EventKind.cube_created, now, user_id, cube_id, details={"name": name}))
        return Cube(
            id=cube_id, name=name, owner_id=user_id, created_at=now, description=description, role=Role.owner
        )

    def list_cubes(self, user_id: str) -> list[Cube]:
        """Cubes ``user_id`` can read, with the user's role on each."""
        with self.home.store.session() as s:
            acl.user(s, user_id)
            rows = s.execute(
                select(CubeRow, AclRow.role)
                .join(AclRow, AclRow.cube_id == CubeRow.id)
                .where(AclRow.user_id == user_id)
                .order_by(CubeRow.created_at)
            ).all()
            return [
                Cube(
                    id=c.id,
                    name=c.name,
                    owner_id=c.owner_id,
                    created_at=c.created_at,
                    description=c.description,
                    role=Role(role),
                )
                for c, role in rows
            ]

    def get_cube(self, cube_id: str, user_id: str) -> Cube:
        with self.home.store.session() as s:
            role = acl.require(s, cube_id, user_id, acl.READ)
            c = s.get(CubeRow, cube_id)
            assert c is not None
            return Cube(
                id=c.id,
                name=c.name,
                owner_id=c.owner_id,
                created_at=c.created_at,
                description=c.description,
                role=role,
            )

    def resolve_cube(self, user_id: str, ref: str) -> str:
        """A cube id from an id or from the name of a cube ``user_id`` can read."""
        with self.home.store.session() as s:
            if s.get(CubeRow, ref) is not None:
                return ref
            ids = list(
                s.scalars(
                    select(CubeRow.id)
                    .join(AclRow, AclRow.cube_id == CubeRow.id)
                    .where(AclRow.user_id == user_id, CubeRow.name == ref)
                )
            )
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise NotFound(f"no cube {ref!r} visible to user {user_id!r}")
        raise InvalidInput(f"cube name {ref!r} is ambiguous for user {user_id!r}; use the cube id")

    def delete_cube(self, cube_id: str, user_id: str) -> int:
        """Delete a cube and everything in it (owner only). Returns the memories removed.

        Its KV prefixes and adapters are retired with it: their blob files deleted, an
        ``artifact_retired`` published for each (after ``cube_deleted``), and listed in the
        ``cube_delete`` audit row, the one record of the cube that stays."""
        with self.home.recording() as rec:
            with self.home.write_lock, self.home.store.session() as s:
                acl.require(s, cube_id, user_id, acl.OWNER)
                count = select(func.count()).select_from(MemoryRow).where(MemoryRow.cube_id == cube_id)
                n = s.scalar(count) or 0
                retired = self._delete_rows(s, cube_id, user_id)
                artifacts = [dict(e.details) for e in retired]
                # the memories are gone, so are their audit events: the cube_delete row is the record
                details = {"memories": n, **({"artifacts": artifacts} if artifacts else {})}
                rec.record(
                    s, Event(EventKind.cube_deleted, self.home.clock(), user_id, cube_id, details=details)
                )
            rec.committed.extend(retired)  # published with cube_deleted: the delete committed
            self.home.index.delete_cube(cube_id)
            self.home.graphs.invalidate(cube_id)
        return int(n)

    def _delete_rows(self, s: Session, cube_id: str, actor: str | None) -> list[Event]:
        # Explicit deletes in dependency order: SQLite only cascades with foreign_keys=ON,
        # and we do not want correctness to hang on a pragma.
        mids = select(MemoryRow.id).where(MemoryRow.cube_id == cube_id).scalar_subquery()
        s.execute(delete(MemoryEntityRow).where(MemoryEntityRow.memory_id.in_(mids)))
        s.execute(delete(EdgeRow).where(EdgeRow.cube_id == cube_id))
        s.execute(delete(MessageRow).where(MessageRow.cube_id == cube_id))
        s.execute(delete(MemoryVersionRow).where(MemoryVersionRow.memory_id.in_(mids)))
        s.execute(delete(MemoryRow).where(MemoryRow.cube_id == cube_id))
        s.execute(delete(EntityRow).where(EntityRow.cube_id == cube_id))
        s.execute(delete(SessionRow).where(SessionRow.cube_id == cube_id))
        s.execute(delete(AclRow).where(AclRow.cube_id == cube_id))
        retired = [e for delete_blobs in self.blob_deleters for e in delete_blobs(s, cube_id, actor)]
        s.execute(delete(CubeRow).where(CubeRow.id == cube_id))
        return retired

    def share_cube(
        self, cube_id: str, owner_id: str, target_user_id: str, role: str | Role = Role.reader
    ) -> Share:
        """Give ``target_user_id`` reader or writer access (owner only)."""
        try:
            role = Role(role)
        except ValueError as exc:
            raise InvalidInput(f"role must be 'reader' or 'writer', got {role!r}") from exc
        if role == Role.owner:
            raise InvalidInput("a cube has one owner; share as 'reader' or 'writer'")
        now = self.home.clock()
        with self.home.recording() as rec, self.home.store.session() as s:
            acl.require(s, cube_id, owner_id, acl.OWNER)
            acl.user(s, target_user_id)
            if target_user_id == owner_id:
                raise InvalidInput("the owner already has full access")
            s.merge(
                AclRow(
                    cube_id=cube_id, user_id=target_user_id, role=role, granted_at=now, granted_by=owner_id
                )
            )
            shared = {"user": target_user_id, "role": role}
            rec.record(s, Event(EventKind.cube_shared, now, owner_id, cube_id, details=shared))
        return Share(cube_id=cube_id, user_id=target_user_id, role=role, granted_at=now, granted_by=owner_id)

    def unshare_cube(self, cube_id: str, owner_id: str, target_user_id: str) -> None:
        with self.home.recording() as rec, self.home.store.session() as s:
            acl.require(s, cube_id, owner_id, acl.OWNER)
            grant = s.get(AclRow, (cube_id, target_user_id))
            if grant is None or grant.role == Role.owner:
                raise NotFound(f"cube {cube_id!r} is not shared with {target_user_id!r}")
            s.delete(grant)
            unshared = {"user": target_user_id}
            rec.record(
                s, Event(EventKind.cube_unshared, self.home.clock(), owner_id, cube_id, details=unshared)
            )

    def shares(self, cube_id: str, user_id: str) -> list[Share]:
        with self.home.store.session() as s:
            acl.require(s, cube_id, user_id, acl.READ)
            return [
                Share(
                    cube_id=a.cube_id,
                    user_id=a.user_id,
                    role=Role(a.role),
                    granted_at=a.granted_at,
                    granted_by=a.granted_by,
                )
                for a in s.scalars(select(AclRow).where(AclRow.cube_id == cube_id))
            ]
