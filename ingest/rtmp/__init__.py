"""RTMP ingest: pure wire codecs (handshake, chunk stream, AMF0, messages) and the asyncio server."""
