"""The videos' handlers: parse, ask `Videos`, present. Their lines are in
`api.views.ROUTES` (`VIDEO_ROUTES`)."""

from __future__ import annotations

from aiohttp import web

from ..models import PublishedCut, Video, VideoPublicId
from ..openapi import PathParameter, Route
from ..present import envelope, json_body, page_info
from ..validation import CutAndPublish, PlaylistQuery, StopAndCut, VideosQuery, parse
from .service import PLAYLIST_CONTENT_TYPE, Videos

VIDEOS_KEY = web.AppKey("videos", Videos)


def _api_base(request: web.Request) -> str:
    """The control API's origin as this client reached it (for playback URLs)."""
    return f"{request.scheme}://{request.host}"


async def stop_and_cut_live_video(request: web.Request) -> web.Response:
    """The live ends; the range becomes a video, cut in the background."""
    body = parse(StopAndCut, await json_body(request, optional=True))
    video = await request.app[VIDEOS_KEY].stop_and_cut(
        request.match_info["projectId"], request.match_info["id"], body
    )
    return envelope(
        VideoPublicId(video_public_id=video["public_id"]),
        messages=["the live ended; the video is being cut"],
    )


async def cut_and_publish_live_video(request: web.Request) -> web.Response:
    """A recorded range becomes a video, cut in the background; the live goes on."""
    body = parse(CutAndPublish, await json_body(request, optional=True))
    videos = request.app[VIDEOS_KEY]
    video, job = await videos.get(
        request.match_info["projectId"],
        (
            await videos.cut_and_publish(
                request.match_info["projectId"], request.match_info["id"], body
            )
        )["public_id"],
    )
    return envelope(
        PublishedCut(
            video_public_id=video["public_id"],
            name=video["name"],
            original_file=videos.original_file_url(video, job),
        ),
        messages=["the video is being cut"],
    )


async def stop_live_video(request: web.Request) -> web.Response:
    """The live ends without a video."""
    await request.app[VIDEOS_KEY].stop_live(
        request.match_info["projectId"], request.match_info["id"]
    )
    return envelope(True, messages=["the live ended"])


async def get_video(request: web.Request) -> web.Response:
    videos = request.app[VIDEOS_KEY]
    video, job = await videos.get(
        request.match_info["projectId"], request.match_info["videoPublicId"]
    )
    return envelope(await videos.view(video, job, _api_base(request)))


async def list_videos(request: web.Request) -> web.Response:
    query = parse(VideosQuery, request.rel_url.query)
    videos = request.app[VIDEOS_KEY]
    page, jobs = await videos.list(
        request.match_info["projectId"], query.live_job_id, query.offset, query.page_size
    )
    base = _api_base(request)
    rows = [await videos.view(v, jobs[int(v["live_job_id"])], base) for v in page.rows]
    return envelope(rows, page=page_info(page.total_count, query))


async def get_video_playlist(request: web.Request) -> web.Response:
    """A private video's HLS playlist, its segments presigned now (no API key: the
    token of its playbackUrl)."""
    query = parse(PlaylistQuery, request.rel_url.query)
    text = await request.app[VIDEOS_KEY].playlist(
        request.match_info["projectId"],
        request.match_info["videoPublicId"],
        query.token,
        query.variant,
    )
    return web.Response(
        text=text,
        content_type=PLAYLIST_CONTENT_TYPE,
        headers={"Cache-Control": "no-store"},  # each request presigns anew
    )


PROJECT_ONLY = {"projectId": PathParameter("The project id", {"type": "string", "format": "uuid"})}
LIVE_VIDEO = {
    **PROJECT_ONLY,
    "id": PathParameter("The live video: its live job's name (UUID) or integer id"),
}
VIDEO = {**PROJECT_ONLY, "videoPublicId": PathParameter("The video's public id (UUID)")}
LIVE_VIDEOS = "/api/v2/{projectId}/live-videos/{id}"
VIDEOS = "/api/v1/{projectId}/videos"

# fmt: off
VIDEO_ROUTES = (
    Route("POST", f"{LIVE_VIDEOS}/stop-and-cut", stop_and_cut_live_video,
          "Stop a live and cut it into a video: the job goes offline (as the toggle does);"
          " the range (milliseconds or date-times, not both; none: the toggle's cut window,"
          " else the whole live) becomes a video, cut in the background (GET the video)",
          VideoPublicId, body=StopAndCut, parameters=LIVE_VIDEO, errors=(404, 503)),
    Route("POST", f"{LIVE_VIDEOS}/cut-and-publish", cut_and_publish_live_video,
          "Cut a recorded range of a live into a video while the live goes on (a range whose"
          " end is not recorded yet is a 400)",
          PublishedCut, body=CutAndPublish, parameters=LIVE_VIDEO, errors=(404, 503)),
    Route("POST", f"{LIVE_VIDEOS}/stop", stop_live_video,
          "Stop a live without a video (the job goes offline, as the toggle does)",
          bool, parameters=LIVE_VIDEO, errors=(404,)),
    Route("GET", VIDEOS, list_videos, "List videos cut from lives (paged, newest first)",
          Video, paged=True, query=VideosQuery, parameters=PROJECT_ONLY, errors=(404,)),
    Route("GET", f"{VIDEOS}/{{videoPublicId}}", get_video, "Get a video cut from a live",
          Video, parameters=VIDEO, errors=(404,)),
    Route("GET", f"{VIDEOS}/{{videoPublicId}}/playlist.m3u8", get_video_playlist,
          "A private video's HLS playlist (its playbackUrl: no API key, the token), the"
          " master or one variant (`variant`), its segments presigned at this request",
          public=True, media_type=PLAYLIST_CONTENT_TYPE, query=PlaylistQuery,
          parameters=VIDEO, errors=(403, 404, 503)),
)
# fmt: on
