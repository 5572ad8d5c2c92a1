"""HLS ingest: a publisher's HLS (playlists and MPEG-TS segments) to a publish session,
its segments fed in order as one MPEG-TS byte stream.

`ingest.hls.push` is the server HLS publishers PUT to (ffmpeg's `-f hls -method PUT`,
YouTube-style HLS ingestion).
"""
