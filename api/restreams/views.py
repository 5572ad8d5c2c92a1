"""The restreams' handlers: parse, ask `Restreams`, present. Their lines are in
`api.views.ROUTES` (`RESTREAM_ROUTES`)."""

from __future__ import annotations

from aiohttp import web

from ..models import Restream, RestreamToggled
from ..openapi import PathParameter, Route
from ..present import envelope, json_body, page_info
from ..validation import NewRestream, Paging, parse
from .service import Restreams
from .store import MAX_RESTREAMS_PER_JOB

RESTREAMS_KEY = web.AppKey("restreams", Restreams)


async def create_restream(request: web.Request) -> web.Response:
    """A restream of a live video; forwarded whenever the live is on, if enabled."""
    restreams = request.app[RESTREAMS_KEY]
    new = parse(NewRestream, await json_body(request, optional=True), outbound=restreams.outbound)
    row, video_id = await restreams.create(request.match_info["projectId"], new)
    return envelope(restreams.view(row, video_id), status=201, messages=["restream created"])


async def toggle_restream(request: web.Request) -> web.Response:
    """Enable a disabled restream, or disable an enabled one."""
    row = await request.app[RESTREAMS_KEY].toggle(
        request.match_info["projectId"], request.match_info["restreamId"]
    )
    status = bool(row["status"])
    return envelope(
        RestreamToggled(id=int(row["id"]), status=status),
        messages=["restream enabled" if status else "restream disabled"],
    )


async def list_live_video_restreams(request: web.Request) -> web.Response:
    paging = parse(Paging, request.rel_url.query)
    restreams = request.app[RESTREAMS_KEY]
    page, video_id = await restreams.list_for_video(
        request.match_info["projectId"],
        request.match_info["videoId"],
        paging.offset,
        paging.page_size,
    )
    rows = [restreams.view(row, video_id) for row in page.rows]
    return envelope(rows, page=page_info(page.total_count, paging))


async def delete_restream(request: web.Request) -> web.Response:
    await request.app[RESTREAMS_KEY].delete(
        request.match_info["projectId"], request.match_info["restreamId"]
    )
    return envelope(True, messages=["restream deleted"])


PROJECT_ONLY = {"projectId": PathParameter("The project id", {"type": "string", "format": "uuid"})}
RESTREAM = {**PROJECT_ONLY, "restreamId": PathParameter("The restream's id (an integer)")}
LIVE_VIDEO = {
    **PROJECT_ONLY,
    "videoId": PathParameter("The live video's id: its live job's name (UUID) or id (integer)"),
}
RESTREAMS = "/api/v1/{projectId}/restreams"

# fmt: off
RESTREAM_ROUTES = (
    Route("POST", RESTREAMS, create_restream,
          "Restream a live video: its media forwarded to streamUrl with streamKey (RTMP or"
          f" RTMPS) whenever the live is on, while enabled (status); at most"
          f" {MAX_RESTREAMS_PER_JOB} per live video. The result says what the forwarding"
          " does now (state, lastError, ...)",
          Restream, status=201, body=NewRestream, parameters=PROJECT_ONLY, errors=(404,)),
    Route("PUT", f"{RESTREAMS}/{{restreamId}}/toggle", toggle_restream,
          "Toggle a restream: enable it (forwarded while the live is on) or disable it"
          " (its forwarding stops)",
          RestreamToggled, parameters=RESTREAM, errors=(404,)),
    Route("DELETE", f"{RESTREAMS}/{{restreamId}}", delete_restream,
          "Delete a restream (its forwarding stops)",
          bool, parameters=RESTREAM, errors=(404,)),
    Route("GET", "/api/v1/{projectId}/live-video/{videoId}/restreams",
          list_live_video_restreams,
          "List a live video's restreams (paged, in the order they were made), each with"
          " what its forwarding does now",
          Restream, paged=True, query=Paging, parameters=LIVE_VIDEO, errors=(404,)),
)
# fmt: on
