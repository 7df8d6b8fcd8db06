"""deferred extraction moves onto the jobs table: extract_tasks rows become extract.deferred jobs

Each cube's queued episodes become jobs of kind ``extract.deferred`` in the order they were
queued: one job per run of episodes added by the same actor, at most 2,000 episodes a job
(``{"memory_ids": [...], "actor": ..., "done": 0}``), so a home opened after the upgrade
still runs its queued extraction, in order. Then ``extract_tasks`` is dropped.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 08:30:00
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import memos.storage.relational.models as models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

KIND = "extract.deferred"
PER_JOB = 2000

_tasks = sa.table(
    "extract_tasks",
    sa.column("id", sa.Integer()),
    sa.column("memory_id", sa.String()),
    sa.column("cube_id", sa.String()),
    sa.column("actor", sa.String()),
    sa.column("created_at", models.UTCDateTime()),
)
_jobs = sa.table(
    "jobs",
    sa.column("id", sa.Integer()),
    sa.column("kind", sa.String()),
    sa.column("cube_id", sa.String()),
    sa.column("payload", sa.JSON()),
    sa.column("dedup_key", sa.String()),
    sa.column("state", sa.String()),
    sa.column("attempts", sa.Integer()),
    sa.column("max_attempts", sa.Integer()),
    sa.column("cancel_requested", sa.Boolean()),
    sa.column("progress", sa.JSON()),
    sa.column("created_at", models.UTCDateTime()),
    sa.column("updated_at", models.UTCDateTime()),
    sa.column("run_after", models.UTCDateTime()),
)


def _job(cube_id: str, actor: str | None, ids: list[str], created: datetime, now: datetime) -> dict[str, Any]:
    return {
        "kind": KIND,
        "cube_id": cube_id,
        "payload": {"memory_ids": ids, "actor": actor, "done": 0},
        "dedup_key": None,
        "state": "queued",
        "attempts": 0,
        "max_attempts": 5,
        "cancel_requested": False,
        "progress": {},
        "created_at": created,
        "updated_at": now,
        "run_after": created,
    }


def upgrade() -> None:
    conn = op.get_bind()
    now = datetime.now(UTC)
    jobs: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    rows = conn.execute(
        sa.select(_tasks.c.cube_id, _tasks.c.actor, _tasks.c.memory_id, _tasks.c.created_at).order_by(
            _tasks.c.cube_id, _tasks.c.id
        )
    )
    for cube_id, actor, memory_id, created in rows:
        if (
            current is None
            or current["cube_id"] != cube_id
            or current["payload"]["actor"] != actor
            or len(current["payload"]["memory_ids"]) >= PER_JOB
        ):
            current = _job(cube_id, actor, [], created or now, now)
            jobs.append(current)
        current["payload"]["memory_ids"].append(memory_id)
    for start in range(0, len(jobs), 500):
        conn.execute(sa.insert(_jobs), jobs[start : start + 500])
    with op.batch_alter_table("extract_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_extract_tasks_memory_id"))
        batch_op.drop_index(batch_op.f("ix_extract_tasks_cube_id"))
    op.drop_table("extract_tasks")


def downgrade() -> None:
    op.create_table(
        "extract_tasks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("memory_id", sa.String(length=36), nullable=False),
        sa.Column("cube_id", sa.String(length=128), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("created_at", models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["memory_id"], ["memories.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("extract_tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_extract_tasks_cube_id"), ["cube_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_extract_tasks_memory_id"), ["memory_id"], unique=True)
    conn = op.get_bind()
    live = sa.and_(_jobs.c.kind == KIND, _jobs.c.state.in_(("queued", "running")))
    memories = sa.table("memories", sa.column("id", sa.String()))
    tasks: dict[str, dict[str, Any]] = {}  # by memory id, in queue order
    for cube_id, payload, created in conn.execute(
        sa.select(_jobs.c.cube_id, _jobs.c.payload, _jobs.c.created_at).where(live).order_by(_jobs.c.id)
    ):
        for memory_id in payload.get("memory_ids", [])[int(payload.get("done", 0)) :]:
            if memory_id is not None:
                tasks.setdefault(
                    memory_id,
                    {
                        "memory_id": memory_id,
                        "cube_id": cube_id,
                        "actor": payload.get("actor"),
                        "created_at": created,
                    },
                )
    queued = list(tasks.values())
    for start in range(0, len(queued), 500):
        chunk = queued[start : start + 500]
        found = set(
            conn.scalars(sa.select(memories.c.id).where(memories.c.id.in_([t["memory_id"] for t in chunk])))
        )
        if kept := [t for t in chunk if t["memory_id"] in found]:  # a purged memory has no task
            conn.execute(sa.insert(_tasks), kept)
    conn.execute(sa.delete(_jobs).where(live))
