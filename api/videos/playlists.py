"""A private video's HLS playlists as onair serves them: pure functions over the text.

The master's variant (and rendition) URIs become onair's own playlist URLs (with the
token); a media playlist's segment URIs become presigned storage URLs, made at each
request, so a playlist read after an earlier one's URLs expired plays again.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable

_URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')


def _is_relative(uri: str) -> bool:
    return "://" not in uri and not uri.startswith("/")


def rewrite(text: str, replace: Callable[[str], str]) -> str:
    """`text` with every URI (a line that is not a tag, a tag's `URI="..."`) replaced."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append(replace(stripped))
        elif stripped.startswith("#") and 'URI="' in stripped:
            lines.append(_URI_ATTRIBUTE.sub(lambda m: f'URI="{replace(m.group(1))}"', stripped))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def uris(text: str) -> list[str]:
    """Every URI of a playlist, in order, each once."""
    found: list[str] = []

    def collect(uri: str) -> str:
        if uri not in found:
            found.append(uri)
        return uri

    rewrite(text, collect)
    return found


def resolve_key(playlist_key: str, uri: str, under: str) -> str | None:
    """The object key a relative `uri` of the playlist at `playlist_key` names; None if
    it is absolute or leaves `under` (the video's prefix)."""
    if not _is_relative(uri):
        return None
    key = posixpath.normpath(posixpath.join(posixpath.dirname(playlist_key), uri.split("?")[0]))
    return key if key.startswith(under.rstrip("/") + "/") else None
