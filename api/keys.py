"""API keys and stream keys: generated from a CSPRNG, stored hashed, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

API_KEY_PREFIX = "oa"


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    secret_hash: bytes
    api_key: str  # shown once, never stored


def _hash_secret(secret: str) -> bytes:
    # The secret is 256 bits from a CSPRNG: a fast hash is enough, there is nothing
    # to brute-force; what matters is that the database never holds the key itself.
    return hashlib.sha256(secret.encode()).digest()


def new_api_key() -> NewApiKey:
    """`oa_<key id>_<secret>`: the id finds the row, the secret is checked by hash."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewApiKey(key_id, _hash_secret(secret), f"{API_KEY_PREFIX}_{key_id}_{secret}")


def split_api_key(api_key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def secret_matches(secret: str, secret_hash: bytes) -> bool:
    return hmac.compare_digest(_hash_secret(secret), secret_hash)


def new_stream_key() -> str:
    """A version-4 UUID whose 122 random bits come from the OS CSPRNG."""
    return str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))


def stream_key_digest(stream_key: str) -> str:
    """What the store indexes stream keys by, so a lookup leaks nothing of the key."""
    return hashlib.sha256(stream_key.strip().lower().encode()).hexdigest()


def stream_keys_equal(given: str, stored: str) -> bool:
    return hmac.compare_digest(given.strip().lower().encode(), stored.lower().encode())
