"""The encoder's exceptions, in one place."""

from __future__ import annotations


class EncoderError(Exception):
    """Something the encoder cannot do with this job or this source."""


class UnsupportedSource(EncoderError):
    """The source cannot be encoded or repackaged with this template."""
