"""The OpenAPI page at ``/docs``, whole without internet access.

FastAPI's page loads Swagger UI from a CDN, so behind a firewall, or on a
machine with no network, it stays blank. Here Swagger UI's JavaScript and CSS
come from the ``fastapi-offline`` package (which ships Swagger UI 5's
``swagger-ui-bundle.js`` and ``swagger-ui.css``) and are served under
``/docs/assets/``. The online validator badge is off: it would fetch an image
from the validator's site.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, Response

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
"""The files the page loads, and nothing else of that folder."""


def install_docs_page(app: FastAPI, path: str = "/docs") -> None:
    """Serve the Swagger UI page at ``path`` and its files under ``path/assets/``
    (for an app created with ``docs_url=None``)."""
    assets = f"{path}/assets"

    async def page(request: Request) -> Response:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon.png",
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = ASSETS.get(name)
        if media_type is None:
            raise StarletteHTTPException(404, f"no such file: {name}")
        return FileResponse(
            ASSETS_DIR / name,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=3600"},
        )

    app.add_route(path, page, include_in_schema=False)
    app.add_route(f"{assets}/{{name}}", asset, include_in_schema=False)
