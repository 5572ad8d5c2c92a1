"""Playback tokens of private videos: who holds the URL may play the video until the
token's time is up, without an API key (a player has none).

A token is `{expires}.{signature}`: the Unix second it expires at, and HMAC-SHA256 over
the video's public id and that second, keyed with a secret of the service (kept in the
store, the same on every host: `VideoStore.secret`), base64url. It names one video, is
unguessable and cannot be extended; it is never the API key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from ..validation import ascii_int

TOKEN_SECRET_NAME = "playback_token_key"


def _signature(secret: str, public_id: str, expires: int) -> str:
    mac = hmac.new(secret.encode(), f"{public_id}.{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def make_token(secret: str, public_id: str, expires: int) -> str:
    """The token for `public_id` that works until the Unix second `expires`."""
    return f"{expires}.{_signature(secret, public_id, expires)}"


def token_problem(
    secret: str,
    public_id: str,
    token: str,
    now: float,
    *,
    what: str = "playback token",
    of: str = "of this video",
    renew: str = "get the video again for a new playbackUrl",
) -> str | None:
    """Why `token` does not let its holder play `public_id` at `now`; None if it does.
    (`what`, `of`, `renew`: how the reason names the token, its subject and the remedy.)"""
    expires_text, _, signature = token.partition(".")
    expires = ascii_int(expires_text)
    if expires is None or not signature:
        return f"not a {what}"
    if not hmac.compare_digest(signature, _signature(secret, public_id, expires)):
        return f"not a {what} {of}"
    if now >= expires:
        return f"the {what} has expired: {renew}"
    return None
