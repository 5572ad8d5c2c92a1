"""The store's schema history as Alembic revisions, run by `api.database` at every open.

No alembic.ini: `api.database.engines.migrate` configures Alembic in code, points it at
this directory and hands `env.py` the connection it opened (in the transaction that holds
the migration lock). Revisions 0001..0004 are the SQLite migrations onair shipped before
Alembic (PRAGMA user_version 1..4); a data dir of that time is stamped at its revision
and upgraded from there.
"""
