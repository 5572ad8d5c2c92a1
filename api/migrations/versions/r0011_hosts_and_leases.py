"""Hosts and leases: the encoding hosts sharing the store, and each job's lease.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels = None
depends_on = None

Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LEASE_COLUMNS = ("lease_expires_at", "lease_token", "lease_key", "lease_encoder_id")


def upgrade() -> None:
    op.add_column("live_jobs", sa.Column("lease_encoder_id", Int64))
    op.add_column("live_jobs", sa.Column("lease_key", sa.Text))
    op.add_column(
        "live_jobs", sa.Column("lease_token", Int64, nullable=False, server_default=sa.text("0"))
    )
    op.add_column("live_jobs", sa.Column("lease_expires_at", sa.Text))
    op.create_table(
        "hosts",
        sa.Column("encoder_id", Int64, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("capacity_units", sa.Float, nullable=False),
        sa.Column("used_units", sa.Float, nullable=False, server_default=sa.text("0")),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("started_at", sa.Text, nullable=False),
        sa.Column("heartbeat_at", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hosts")
    # Never recreated on SQLite (see r0009): its own DROP COLUMN.
    with op.batch_alter_table("live_jobs", recreate="never") as batch:
        for column in LEASE_COLUMNS:
            batch.drop_column(column)
