"""RTMP ingest: pure wire codecs (handshake, chunks, AMF0, messages) and the asyncio server."""
