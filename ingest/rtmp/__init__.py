"""RTMP ingest: pure wire codecs (handshake, chunks, messages) and the asyncio server.

AMF0 and FLV are formats, not parts of RTMP: they are in `ingest.formats`."""
