"""Request authentication: `Authorization: <key>`, `Authorization: Bearer <key>` or `x-api-key`."""

from __future__ import annotations

from collections.abc import Mapping

from .database import Database
from .errors import Unauthorized
from .keys import secret_matches, split_api_key

KEY_HEADERS = "'Authorization: <key>', 'Authorization: Bearer <key>' or 'x-api-key: <key>'"


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The API key a request carries, None without one; Unauthorized if it is malformed.

    The reference only says that `Authorization` carries the credential: one token is
    the key itself, `Bearer <key>` the key; any other scheme (`Basic ...`) is refused
    rather than read as a key with a space in it.
    """
    authorization = headers.get("Authorization", "").strip()
    if authorization:
        tokens = authorization.split()
        if len(tokens) == 1:
            return tokens[0]
        if len(tokens) == 2 and tokens[0].lower() == "bearer":
            return tokens[1]
        raise Unauthorized(f"invalid Authorization header: use {KEY_HEADERS}")
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


async def authenticate(database: Database, headers: Mapping[str, str]) -> str:
    """The project id the request's key belongs to; Unauthorized otherwise."""
    api_key = key_from_headers(headers)
    if api_key is None:
        raise Unauthorized(f"an API key is required: {KEY_HEADERS}")
    parts = split_api_key(api_key)
    row = await database.call(database.get_api_key, parts[0]) if parts else None
    # Always compare, even when the key id is unknown, so timing tells nothing.
    stored_hash = row["secret_hash"] if row else b"\0" * 32
    if not secret_matches(parts[1] if parts else api_key, stored_hash) or row is None:
        raise Unauthorized("invalid API key")
    return str(row["project_id"])
