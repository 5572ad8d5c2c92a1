"""Request authentication: `Authorization: Bearer <key>` or `x-api-key: <key>`."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import Unauthorized
from .keys import secret_matches, split_api_key
from .store import Store


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("Authorization", "").strip()
    if authorization:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            return credential.strip()
        return None
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


async def authenticate(store: Store, headers: Mapping[str, str]) -> str:
    """The project id the request's key belongs to; Unauthorized otherwise."""
    api_key = key_from_headers(headers)
    if api_key is None:
        raise Unauthorized("an API key is required: 'Authorization: Bearer <key>' or 'x-api-key'")
    parts = split_api_key(api_key)
    row = await store.call(store.get_api_key, parts[0]) if parts else None
    # Always compare, even when the key id is unknown, so timing tells nothing.
    stored_hash = row["secret_hash"] if row else b"\0" * 32
    if not secret_matches(parts[1] if parts else api_key, stored_hash) or row is None:
        raise Unauthorized("invalid API key")
    return str(row["project_id"])
