"""Input relays: where a host takes the inputs other hosts relay to it, and its secret;
and the restreams' live states, for the hosts that do not run the live.

A Standard job's second publisher that reaches a host without the job's lease is
relayed over RTMP to the host holding it (`api.input_relay`): `relay_url` is that
host's RTMP listener as the others reach it, `relay_proxy` whether it expects a PROXY
protocol header first, `relay_secret` the key of the token a relay presents (new at
each registration). `restreams.live_state` is what a restream's forwarding does now,
written every few seconds by the host running its live (JSON, with the time it was
written), read by the others.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels = None
depends_on = None

Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COLUMNS = ("relay_secret", "relay_proxy", "relay_url")


def upgrade() -> None:
    op.add_column("hosts", sa.Column("relay_url", sa.Text))
    op.add_column(
        "hosts", sa.Column("relay_proxy", Int64, nullable=False, server_default=sa.text("0"))
    )
    op.add_column("hosts", sa.Column("relay_secret", sa.Text))
    op.add_column("restreams", sa.Column("live_state", sa.Text))


def downgrade() -> None:
    # Never recreated on SQLite (see r0009): its own DROP COLUMN.
    with op.batch_alter_table("restreams", recreate="never") as batch:
        batch.drop_column("live_state")
    with op.batch_alter_table("hosts", recreate="never") as batch:
        for column in COLUMNS:
            batch.drop_column(column)
