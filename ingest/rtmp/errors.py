"""The RTMP exception tree: every wire-level failure is one of these."""

from __future__ import annotations


class RtmpError(Exception):
    """Base of every RTMP wire error; it ends only the connection it came from."""


class HandshakeError(RtmpError):
    """The peer's handshake bytes are short, garbage or of an unsupported version."""


class ProtocolError(RtmpError):
    """The chunk stream or a message breaks the protocol or one of our limits."""


class AmfMessageError(ProtocolError):
    """A command or data message whose AMF0 body does not decode, or is not a command.

    The AMF0 codec (`ingest.formats.amf0`) raises its own `AmfError`, a ValueError;
    `ingest.rtmp.messages` turns it into this, a protocol error of the connection."""
