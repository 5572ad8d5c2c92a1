"""The operator's web console: static files served by the service itself at /console.

`console_routes(app)` adds `GET /console` (a redirect to `/console/`), `/console/`
(index.html), `/console/{path}` (the files of `static/`) and `/console/vendor/{name}`
(the few front-end library files the console loads, from the repository's
`node_modules`, whitelisted by name). The page talks to the control API with the
operator's key; it needs no route of its own.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"

# The library files the console loads, by the name it asks for: nothing else of
# node_modules is reachable.
VENDOR_FILES = {
    "hls.mjs": Path("hls.js/dist/hls.min.mjs"),
    "uPlot.esm.js": Path("uplot/dist/uPlot.esm.js"),
    "uPlot.min.css": Path("uplot/dist/uPlot.min.css"),
    "mpegts.js": Path("mpegts.js/dist/mpegts.js"),
}

# Scripts only from this origin. Media, playlists and sockets go elsewhere (the S3
# public URL, the CDN, ws://.../websocketplay), and hls.js / mpegts.js run workers from
# blob: URLs; uPlot sets inline styles on its elements.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "worker-src 'self' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: http: https:",
        "connect-src 'self' http: https: ws: wss:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    )
)
INDEX_CACHE = "no-cache"  # revalidated each time: a new console is seen at once
ASSET_CACHE = "no-cache"  # same origin, small files: ETag-free revalidation is cheap
VENDOR_CACHE = "public, max-age=86400"  # pinned versions (package-lock.json)

_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def _file_response(path: Path, cache_control: str) -> web.StreamResponse:
    content_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    headers = {
        "Cache-Control": cache_control,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Content-Type": (content_type or "application/octet-stream")
        + ("; charset=utf-8" if content_type and content_type.startswith("text/") else ""),
    }
    return web.FileResponse(path, headers=headers)


def _not_found(what: str) -> web.Response:
    return web.Response(status=404, text=f"console: {what} not found\n")


async def console_redirect(request: web.Request) -> web.StreamResponse:
    """`/console` -> `/console/` (the page's relative URLs need the slash)."""
    raise web.HTTPFound("/console/")


async def console_index(request: web.Request) -> web.StreamResponse:
    """The console's page."""
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        return _not_found("index.html (api/console/static/ is not installed)")
    return _file_response(index, INDEX_CACHE)


async def console_static(request: web.Request) -> web.StreamResponse:
    """One file of `static/`, by a plain name (no directory, no hidden file)."""
    name = request.match_info["path"]
    if "/" in name or "\\" in name or name.startswith(".") or not name:
        return _not_found(repr(name))
    path = STATIC_DIR / name
    if not path.is_file():
        return _not_found(repr(name))
    return _file_response(path, INDEX_CACHE if name == "index.html" else ASSET_CACHE)


async def console_vendor(request: web.Request) -> web.StreamResponse:
    """A whitelisted library file from node_modules (installed by `npm ci`)."""
    name = request.match_info["name"]
    relative = VENDOR_FILES.get(name)
    if relative is None:
        return _not_found(f"vendor file {name!r} (not one the console uses)")
    path = NODE_MODULES / relative
    if not path.is_file():
        return _not_found(
            f"vendor file {name!r}: node_modules/{relative} is missing (run `npm ci`)"
        )
    return _file_response(path, VENDOR_CACHE)


def console_routes(app: web.Application) -> None:
    """Serve the console on `app` (before it starts): /console, /console/, its files."""
    app.router.add_routes(
        [
            web.get("/console", console_redirect),
            web.get("/console/", console_index),
            web.get("/console/vendor/{name}", console_vendor),
            web.get("/console/{path}", console_static),
        ]
    )
