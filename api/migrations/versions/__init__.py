"""Alembic revisions, one file each, numbered in order (`revision = "0001"`, ...)."""
