"""/docs (Swagger UI) and /redoc (ReDoc), served with their assets from fsguard itself.

The assets are vendored in fsguard_api/static (versions, licenses and hashes in its
README.md), so both pages render on a host without internet access: nothing is fetched
from a CDN and ReDoc is told not to load Google Fonts.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import FileResponse, Response

from fsguard_api.models import error_response

STATIC_DIR = Path(__file__).with_name("static")
STATIC_PREFIX = "/static"
# name -> media type; only these files are served (no path from the request reaches the disk)
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "LICENSE.swagger-ui": "text/plain; charset=utf-8",
    "NOTICE.swagger-ui": "text/plain; charset=utf-8",
    "swagger-ui-bundle.js.LICENSE.txt": "text/plain; charset=utf-8",
    "LICENSE.redoc": "text/plain; charset=utf-8",
    "redoc.standalone.js.LICENSE.txt": "text/plain; charset=utf-8",
}
CACHE = "public, max-age=86400"


def install(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    title = f"{app.title} {app.version}"
    favicon = f"{STATIC_PREFIX}/favicon-32x32.png"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> Response:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{STATIC_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_PREFIX}/swagger-ui.css",
            swagger_favicon_url=favicon,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> Response:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{STATIC_PREFIX}/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )

    @app.get(STATIC_PREFIX + "/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        media = ASSETS.get(name)
        if media is None:
            return error_response(404, "not found")
        return FileResponse(STATIC_DIR / name, media_type=media, headers={"Cache-Control": CACHE})
