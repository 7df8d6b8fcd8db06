"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22 22:32:21.341249
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import memos.storage.relational.models as models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts", models.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("cube_id", sa.String(length=128), nullable=True),
        sa.Column("memory_id", sa.String(length=36), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_cube_id"), ["cube_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_memory_id"), ["memory_id"], unique=False)

    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("cube_id", sa.String(length=128), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", models.UTCDateTime(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_blobs_cube_id"), ["cube_id"], unique=False)

    op.create_table(
        "index_tasks",
        sa.Column("memory_id", sa.String(length=36), nullable=False),
        sa.Column("op", sa.String(length=16), nullable=False),
        sa.Column("created_at", models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("memory_id"),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "cubes",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner_id", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", models.UTCDateTime(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner_id", "name", name="uq_cubes_owner_name"),
    )
    with op.batch_alter_table("cubes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cubes_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "cube_acl",
        sa.Column("cube_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("granted_at", models.UTCDateTime(), nullable=False),
        sa.Column("granted_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(["cube_id"], ["cubes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("cube_id", "user_id"),
    )
    with op.batch_alter_table("cube_acl", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cube_acl_user_id"), ["user_id"], unique=False)

    op.create_table(
        "entities",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cube_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("created_at", models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["cube_id"], ["cubes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cube_id", "key", name="uq_entities_cube_key"),
    )
    op.create_table(
        "memories",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("cube_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("importance", sa.Float(), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=True),
        sa.Column("session_id", sa.String(length=200), nullable=True),
        sa.Column("speaker", sa.String(length=200), nullable=True),
        sa.Column("role", sa.String(length=32), nullable=True),
        sa.Column("source_ids", sa.JSON(), nullable=False),
        sa.Column("extractor", sa.String(length=64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("occurred_at", models.UTCDateTime(), nullable=True),
        sa.Column("valid_from", models.UTCDateTime(), nullable=True),
        sa.Column("valid_to", models.UTCDateTime(), nullable=True),
        sa.Column("recorded_at", models.UTCDateTime(), nullable=False),
        sa.Column("retired_at", models.UTCDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("superseded_by", sa.String(length=36), nullable=True),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("last_accessed", models.UTCDateTime(), nullable=True),
        sa.Column("updated_at", models.UTCDateTime(), nullable=False),
        sa.Column("index_state", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["cube_id"], ["cubes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("memories", schema=None) as batch_op:
        batch_op.create_index("ix_memories_cube_message", ["cube_id", "message_id"], unique=False)
        batch_op.create_index("ix_memories_cube_session", ["cube_id", "session_id"], unique=False)
        batch_op.create_index("ix_memories_cube_state", ["cube_id", "state"], unique=False)
        batch_op.create_index("ix_memories_cube_type", ["cube_id", "type"], unique=False)
        batch_op.create_index("ix_memories_index_state", ["index_state"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("cube_id", sa.String(length=128), nullable=False),
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", models.UTCDateTime(), nullable=False),
        sa.Column("last_active", models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["cube_id"], ["cubes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("cube_id", "id"),
    )
    op.create_table(
        "edges",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cube_id", sa.String(length=128), nullable=False),
        sa.Column("src_id", sa.Integer(), nullable=False),
        sa.Column("predicate", sa.String(length=64), nullable=False),
        sa.Column("dst_id", sa.Integer(), nullable=False),
        sa.Column("memory_id", sa.String(length=36), nullable=False),
        sa.Column("valid_from", models.UTCDateTime(), nullable=True),
        sa.Column("valid_to", models.UTCDateTime(), nullable=True),
        sa.Column("created_at", models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["cube_id"], ["cubes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["dst_id"], ["entities.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["memory_id"], ["memories.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["src_id"], ["entities.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("edges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_edges_cube_id"), ["cube_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_edges_memory_id"), ["memory_id"], unique=False)

    op.create_table(
        "memory_entities",
        sa.Column("memory_id", sa.String(length=36), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["entity_id"], ["entities.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["memory_id"], ["memories.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("memory_id", "entity_id"),
    )
    with op.batch_alter_table("memory_entities", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_memory_entities_entity_id"), ["entity_id"], unique=False)

    op.create_table(
        "memory_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("memory_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("importance", sa.Float(), nullable=False),
        sa.Column("valid_from", models.UTCDateTime(), nullable=True),
        sa.Column("valid_to", models.UTCDateTime(), nullable=True),
        sa.Column("recorded_at", models.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["memory_id"], ["memories.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("memory_id", "version", name="uq_memory_versions"),
    )
    with op.batch_alter_table("memory_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_memory_versions_memory_id"), ["memory_id"], unique=False)

    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cube_id", sa.String(length=128), nullable=False),
        sa.Column("session_id", sa.String(length=200), nullable=True),
        sa.Column("message_id", sa.String(length=200), nullable=True),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("timestamp", models.UTCDateTime(), nullable=True),
        sa.Column("memory_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["cube_id"], ["cubes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["memory_id"], ["memories.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_cube_session", ["cube_id", "session_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_memory_id"), ["memory_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_memory_id"))
        batch_op.drop_index("ix_messages_cube_session")

    op.drop_table("messages")
    with op.batch_alter_table("memory_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_memory_versions_memory_id"))

    op.drop_table("memory_versions")
    with op.batch_alter_table("memory_entities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_memory_entities_entity_id"))

    op.drop_table("memory_entities")
    with op.batch_alter_table("edges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_edges_memory_id"))
        batch_op.drop_index(batch_op.f("ix_edges_cube_id"))

    op.drop_table("edges")
    op.drop_table("sessions")
    with op.batch_alter_table("memories", schema=None) as batch_op:
        batch_op.drop_index("ix_memories_index_state")
        batch_op.drop_index("ix_memories_cube_type")
        batch_op.drop_index("ix_memories_cube_state")
        batch_op.drop_index("ix_memories_cube_session")
        batch_op.drop_index("ix_memories_cube_message")

    op.drop_table("memories")
    op.drop_table("entities")
    with op.batch_alter_table("cube_acl", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cube_acl_user_id"))

    op.drop_table("cube_acl")
    with op.batch_alter_table("cubes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cubes_owner_id"))

    op.drop_table("cubes")
    op.drop_table("users")
    op.drop_table("meta")
    op.drop_table("index_tasks")
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blobs_cube_id"))

    op.drop_table("blobs")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_memory_id"))
        batch_op.drop_index(batch_op.f("ix_audit_events_cube_id"))

    op.drop_table("audit_events")
