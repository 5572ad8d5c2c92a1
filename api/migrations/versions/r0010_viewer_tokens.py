"""Viewer tokens: a job whose WebSocket viewers need a token from the API.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels = None
depends_on = None

Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "live_jobs",
        sa.Column("viewer_token_required", Int64, nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    # Never recreated on SQLite (see r0009): its own DROP COLUMN.
    with op.batch_alter_table("live_jobs", recreate="never") as batch:
        batch.drop_column("viewer_token_required")
