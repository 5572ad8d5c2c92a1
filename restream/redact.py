"""Stream keys out of every log line and error message.

A stream key is a publishing credential: whoever has it can broadcast on the
owner's channel. Everything a restream logs or raises says `{sec…k3y}` instead
(the first and last three characters, enough to tell two keys apart), or `{…}`
for a key too short to show any of it.
"""

from __future__ import annotations

from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

ELLIPSIS = "…"
_SHOWN = 3  # characters shown at each end
_MIN_SHOWN_LENGTH = 9  # a key of 8 characters or fewer shows none


def redact_key(key: str) -> str:
    """`{sec…k3y}` for `sec-something-k3y`; `{…}` for a key of 8 characters or fewer."""
    if len(key) < _MIN_SHOWN_LENGTH:
        return "{" + ELLIPSIS + "}"
    return "{" + key[:_SHOWN] + ELLIPSIS + key[-_SHOWN:] + "}"


def _forms(key: str) -> list[str]:
    """The spellings of `key` that may show up in text, the longest first."""
    forms = {key, quote(key, safe=""), quote(key), quote_plus(key)}
    # nginx-rtmp and others strip a `?query` from the name: its first part is the secret.
    base = key.split("?", 1)[0]
    if base and base != key:
        forms |= {base, quote(base, safe=""), quote_plus(base)}
    return sorted((form for form in forms if form), key=len, reverse=True)


def redact(text: str, key: str) -> str:
    """`text` with every occurrence of `key` (plain or URL-encoded) redacted."""
    if not key:
        return text
    shown = redact_key(key)
    for form in _forms(key):
        text = text.replace(form, shown)
    return text


def display_url(stream_url: str, key: str) -> str:
    """`rtmp://host/app/{sec…k3y}`: the destination as logs and messages may show it.

    A key found in `stream_url` itself is redacted too; URL credentials and a query
    are left out.
    """
    parts = urlsplit(stream_url.rstrip("/"))
    netloc = parts.netloc.rsplit("@", 1)[-1]  # never show user:password@
    base = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return redact(base, key) + "/" + redact_key(key)
