"""extract_tasks: the queue of deferred extraction; an index on edges (src_id, predicate)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import memos.storage.relational.models as models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
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
    with op.batch_alter_table("edges", schema=None) as batch_op:
        batch_op.create_index("ix_edges_src_predicate", ["src_id", "predicate"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("edges", schema=None) as batch_op:
        batch_op.drop_index("ix_edges_src_predicate")
    with op.batch_alter_table("extract_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_extract_tasks_memory_id"))
        batch_op.drop_index(batch_op.f("ix_extract_tasks_cube_id"))
    op.drop_table("extract_tasks")
