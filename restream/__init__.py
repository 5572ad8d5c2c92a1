"""Forwarding a live to other platforms (restreams): FLV over RTMP/RTMPS."""
