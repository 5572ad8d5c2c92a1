"""A job's WebSockets on whichever host the client reached (several hosts, one store).

The viewing socket (`/websocketplay/{name}`) and the telemetry socket
(`.../livejobs/{id}/events`) of a live that another host runs are relayed to the same
endpoint on that host: browsers do not follow redirects on a WebSocket handshake. The
client's credentials go along (its `Authorization` header, its `?token=`), so the
host running the live checks them and applies its own viewer limits; a refusal there
is this host's answer, with its status. A relayed request is marked
(`X-Onair-Relayed`) and never relayed again. The addresses are the hosts' own
registrations in the store (`ONAIR_INTERNAL_URL`), never a client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import WSMsgType, web

logger = logging.getLogger(__name__)

RELAYED_HEADER = "X-Onair-Relayed"
FORWARDED_HEADERS = ("Authorization",)
CONNECT_TIMEOUT_SECONDS = 5.0
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a viewer's MPEG-TS chunks are far smaller


def relayed(request: web.Request) -> bool:
    """Whether another host relayed this request here (it is not relayed again)."""
    return request.headers.get(RELAYED_HEADER) == "1"


async def relay_websocket(request: web.Request, base_url: str) -> web.StreamResponse:
    """The client's WebSocket, relayed both ways to the same path on `base_url`."""
    url = base_url.rstrip("/") + request.rel_url.path_qs
    headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
    headers[RELAYED_HEADER] = "1"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            upstream = await session.ws_connect(
                url, headers=headers, heartbeat=30, max_msg_size=MAX_MESSAGE_BYTES
            )
        except aiohttp.WSServerHandshakeError as refused:
            # The host running the live said no (a token, a limit): its answer, its status.
            return web.json_response(
                {
                    "success": False,
                    "errors": [f"refused by the host running the live: {refused.message}"],
                    "messages": [],
                    "result": None,
                },
                status=refused.status,
            )
        except (aiohttp.ClientError, OSError) as error:
            logger.warning("relaying a WebSocket to %s failed: %s", base_url, error)
            raise web.HTTPServiceUnavailable(
                reason="the host running the live does not answer: try again"
            ) from None
        async with upstream:
            client = web.WebSocketResponse(heartbeat=30, max_msg_size=4096)
            await client.prepare(request)
            down = asyncio.create_task(_pipe(upstream, client))
            up = asyncio.create_task(_pipe(client, upstream))
            try:
                await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (down, up):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await client.close()
    return client


async def _pipe(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    async for message in source:
        if message.type is WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type is WSMsgType.TEXT:
            await sink.send_str(message.data)
        else:
            break
