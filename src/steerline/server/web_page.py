"""The web page at ``/`` (SPEC §5): plain HTML and ES modules, no build step.

The files live in ``steerline/server/web/`` (package data) and are served as
they are: ``GET /`` is ``index.html``, ``GET /web/<name>`` one of the other
files. Only files of that folder with a known type are served (a fixed list
made when the app is built, so no path from a request ever reaches the file
system); their contents are read then too, so a request never waits on the
disk (edit a file, restart the server). The page needs no API key; the API
calls it makes do.

Every answer carries a strict Content-Security-Policy: scripts, styles and
connections only from this origin, no inline script or style, no plugins, no
framing, and Trusted Types required for DOM sinks (so even a mistaken
``innerHTML`` in the page would throw instead of parsing agent output as
HTML). ``X-Content-Type-Options: nosniff`` keeps a browser from reading a file
as another type. Files are answered with an ``ETag`` and ``Cache-Control:
no-cache``: a browser revalidates (304) and sees a new version at once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

WEB_DIR = Path(__file__).with_name("web")
"""The page's files, shipped in the package."""

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
"""The types served; any other file of the folder is not."""

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
"""Headers of every file of the page (``index.html`` and its assets)."""


def web_files(directory: Path = WEB_DIR) -> dict[str, str]:
    """Name (relative to ``directory``, ``/``-separated) -> media type, for every
    servable file (``index.html`` included: it is also ``/``)."""
    files: dict[str, str] = {}
    if not directory.is_dir():
        return files
    for path in sorted(directory.rglob("*")):
        media_type = MEDIA_TYPES.get(path.suffix.lower())
        if path.is_file() and media_type is not None:
            files[path.relative_to(directory).as_posix()] = media_type
    return files


def install_web_page(app: FastAPI, directory: Path = WEB_DIR) -> None:
    """Serve the page at ``/`` and its files under ``/web/`` (not in the OpenAPI
    document: they are not part of the API)."""
    files: dict[str, tuple[bytes, str, str]] = {}
    for name, media_type in web_files(directory).items():
        body = (directory / name).read_bytes()
        files[name] = (body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    def serve(request: Request, name: str) -> Response:
        file = files.get(name)
        if file is None:
            raise StarletteHTTPException(404, f"no such file: {name}")
        body, media_type, etag = file
        headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)

    async def index(request: Request) -> Response:
        return serve(request, "index.html")

    async def asset(request: Request) -> Response:
        return serve(request, request.path_params["name"])

    app.add_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_route("/web/{name:path}", asset, methods=["GET", "HEAD"], include_in_schema=False)
