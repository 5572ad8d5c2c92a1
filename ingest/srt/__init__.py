"""SRT ingest: a ctypes binding of libsrt 1.5 (`ingest.srt.libsrt`) and the server
that takes MPEG-TS publishers on one UDP port (`ingest.srt.server`)."""

from ingest.srt.server import Precheck, SrtAccess, SrtServer

__all__ = ["Precheck", "SrtAccess", "SrtServer"]
