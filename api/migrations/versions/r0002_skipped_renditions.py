"""Renditions a pipeline does not encode (a source smaller than the rung).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "outputs", sa.Column("skipped", Int64, nullable=False, server_default=sa.text("0"))
    )
    op.add_column("outputs", sa.Column("skip_reason", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("outputs") as batch:
        batch.drop_column("skip_reason")
        batch.drop_column("skipped")
