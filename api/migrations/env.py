"""Alembic's entry point: migrate on the connection `api.database` hands over.

Run only through `api.database.engines.migrate` (which passes the connection in
`config.attributes["connection"]`, already in a transaction): the whole upgrade is one
transaction with that of the caller.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from api.database.schema import metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("api.migrations runs only from api.database (it passes the connection)")
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():  # joins the caller's transaction
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("api.migrations has no offline (SQL script) mode")
run_migrations_online()
