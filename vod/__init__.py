"""Videos on demand cut from a live's recording (see vod.cut)."""

from vod.cut import CutCancelled, CutRequest, CutResult, cut_video
from vod.errors import CutError
from vod.timeline import RecordedTimeline, recorded_timeline

__all__ = [
    "CutCancelled",
    "CutError",
    "CutRequest",
    "CutResult",
    "RecordedTimeline",
    "cut_video",
    "recorded_timeline",
]
