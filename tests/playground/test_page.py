"""The playground's page and assets as HTTP: strict headers, no inline script or style, only its own files."""

from __future__ import annotations

import re

from pipelex_server.api.routes.playground import STATIC_DIR

HOOKS = (
    "bundle-editor", "validate-button", "verdict", "graph", "inputs-form", "dry-run-toggle",
    "run-button", "progress", "output", "runs-list", "cancel-button", "auth-token",
)  # fmt: skip


async def test_page_is_served_with_a_strict_policy(client) -> None:
    response = await client.get("/playground")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    for hook in HOOKS:
        assert f'data-testid="{hook}"' in response.text, hook


async def test_page_has_no_inline_script_style_or_remote_asset(client) -> None:
    html = (await client.get("/playground")).text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
    assert not re.search(r"\sstyle=", html) and "<style" not in html
    assert not re.search(r"\son[a-z]+=", html), "an inline event handler"
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("/"), f"{url} is not this server's"
    for script in STATIC_DIR.rglob("*.js"):  # the modules reach the server by relative paths only
        text = script.read_text()
        assert not re.search(r"fetch\(\s*['\"`]https?:", text), script.name
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text, script.name


async def test_every_referenced_asset_answers_with_its_type(client) -> None:
    html = (await client.get("/playground")).text
    for url in re.findall(r'(?:src|href)="(/playground/static/[^"]+)"', html):
        response = await client.get(url)
        assert response.status_code == 200, url
        assert response.headers["x-content-type-options"] == "nosniff"
    modules = await client.get("/playground/static/js/main.js")
    assert modules.headers["content-type"].startswith("text/javascript")
    for name in re.findall(r'from "\./([a-z]+\.js)"', modules.text):
        assert (await client.get(f"/playground/static/js/{name}")).status_code == 200, name


async def test_unknown_and_escaping_asset_names_are_404(client) -> None:
    for name in ("nope.js", "../routes/playground.py", "..%2F..%2Fapp.py", "js/../../../settings.py", "index.html/"):
        response = await client.get(f"/playground/static/{name}")
        assert response.status_code == 404, name
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_head_and_trailing_slash(client) -> None:
    assert (await client.head("/playground")).status_code == 200
    redirect = await client.get("/playground/", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == "/playground"


async def test_playground_enabled_false_removes_the_page(make_app) -> None:
    handle = await make_app(playground_enabled=False)
    for path in ("/playground", "/playground/static/js/main.js"):
        response = await handle.client.get(path)
        assert response.status_code == 404, path
    assert (await handle.client.get("/health")).status_code == 200
