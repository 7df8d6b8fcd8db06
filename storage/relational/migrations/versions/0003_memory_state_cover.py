"""memories (id, state, importance): a covering index for the search's per-candidate state read

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 21:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a home of a million memories builds it in a few seconds, once, when it is next opened
    op.create_index("ix_memories_id_state_importance", "memories", ["id", "state", "importance"])


def downgrade() -> None:
    op.drop_index("ix_memories_id_state_importance", table_name="memories")
