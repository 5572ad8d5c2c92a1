"""Watching a live over a WebSocket: one reader of the live's tracks per viewer, muxed
into a continuous MPEG-TS stream (`viewer.stream`)."""
