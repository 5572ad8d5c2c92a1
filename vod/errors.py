"""The one exception of a cut a user can read."""

from __future__ import annotations


class CutError(Exception):
    """A reason a user can read: a bad range, nothing recorded, something unsupported."""
