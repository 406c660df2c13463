"""The Playground: the browser page at /playground and its static assets, served read-only with a strict CSP."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from pipelex_server.errors import ApiProblem

router = APIRouter(tags=["playground"], include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parents[2] / "playground" / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
# The page talks to this server only; no script but its own files, no inline script or style attribute, no framing.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@cache
def _assets() -> dict[str, tuple[bytes, str]]:
    """Every servable file, read once: name -> (bytes, media type). Only these names answer; nothing is resolved."""
    assets: dict[str, tuple[bytes, str]] = {}
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file() and path.suffix in MEDIA_TYPES:
            assets[path.relative_to(STATIC_DIR).as_posix()] = (path.read_bytes(), MEDIA_TYPES[path.suffix])
    return assets


def _asset(name: str) -> Response:
    found = _assets().get(name)
    if found is None:
        raise ApiProblem(status=404, code="route.not_found", detail="No such playground asset.")
    body, media_type = found
    return Response(body, media_type=media_type, headers=HEADERS)


@router.api_route("/playground", methods=["GET", "HEAD"])
async def playground_page() -> Response:
    return _asset("index.html")


@router.get("/playground/")
async def playground_slash() -> Response:
    return RedirectResponse("/playground", status_code=308)


@router.api_route("/playground/static/{name:path}", methods=["GET", "HEAD"])
async def playground_asset(name: str) -> Response:
    return _asset(name)
