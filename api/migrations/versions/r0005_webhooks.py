"""Webhooks: each project's signing secret (and the previous one, through its grace
period), the delivery queue and every attempt.

Existing projects get a secret here, generated from the OS CSPRNG as
`api.webhooks.signing.new_webhook_secret` does (`onair project rotate-webhook-secret`
replaces it).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import base64
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None

Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column[int]:
    return sa.Column("id", Int64, sa.Identity(), primary_key=True)


def upgrade() -> None:
    op.add_column("projects", sa.Column("webhook_secret", sa.Text))
    op.add_column("projects", sa.Column("previous_webhook_secret", sa.Text))
    op.add_column("projects", sa.Column("previous_webhook_secret_until", sa.Text))
    bind = op.get_bind()
    projects = sa.table("projects", sa.column("id", sa.Text), sa.column("webhook_secret", sa.Text))
    for (project_id,) in bind.execute(sa.select(projects.c.id)).all():
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        bind.execute(
            sa.update(projects).where(projects.c.id == project_id).values(webhook_secret=secret)
        )
    op.create_table(
        "webhook_deliveries",
        _id(),
        sa.Column("webhook_id", sa.Text, nullable=False, unique=True),
        sa.Column(
            "project_id",
            sa.Text,
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "live_job_id",
            Int64,
            sa.ForeignKey("live_jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("sequence", Int64, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", Int64, nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("next_attempt_at", sa.Text),
        sa.Column("claimed_until", sa.Text),
        sa.Column("claimed_by", sa.Text),
        sa.Column("last_status_code", Int64),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", sa.Text),
        sa.Column("finished_at", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "webhook_deliveries_job_sequence",
        "webhook_deliveries",
        ["live_job_id", "sequence"],
        unique=True,
    )
    op.create_index("webhook_deliveries_due", "webhook_deliveries", ["state", "next_attempt_at"])
    op.create_index(
        "webhook_deliveries_project", "webhook_deliveries", ["project_id", "live_job_id", "id"]
    )
    op.create_table(
        "webhook_attempts",
        _id(),
        sa.Column(
            "delivery_id",
            Int64,
            sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempted_at", sa.Text, nullable=False),
        sa.Column("status_code", Int64),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", Int64, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("webhook_attempts_delivery", "webhook_attempts", ["delivery_id", "id"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("previous_webhook_secret_until")
        batch.drop_column("previous_webhook_secret")
        batch.drop_column("webhook_secret")
