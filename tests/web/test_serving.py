"""How the page is served: ``GET /`` and ``/web/<file>``, with a strict CSP,
``nosniff``, ETags, no API key needed, and not part of the API's OpenAPI
document."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx2

from steerline.server.settings import ServerSettings
from steerline.server.web_page import WEB_DIR, web_files
from tests.server.harness import RunningServer

ASSETS = {
    "app.js": "text/javascript",
    "api.js": "text/javascript",
    "stream.js": "text/javascript",
    "timeline.js": "text/javascript",
    "queue.js": "text/javascript",
    "markdown.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}


def _csp(header: str) -> dict[str, str]:
    return {
        name: value.strip()
        for name, _, value in (part.strip().partition(" ") for part in header.split(";"))
    }


def test_page_and_assets_are_served_with_a_strict_policy(
    make_server: Callable[..., RunningServer],
) -> None:
    # with API keys configured: the page itself needs none
    server = make_server(ServerSettings(store="memory://", api_keys={"k": "t"}))
    with httpx2.Client(timeout=10) as http:
        page = http.get(f"{server.url}/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = _csp(page.headers["content-security-policy"])
        assert policy["default-src"] == "'self'"
        assert policy["script-src"] == "'self'"  # no inline script, no eval
        assert policy["style-src"] == "'self'"
        assert policy["connect-src"] == "'self'"
        assert policy["object-src"] == "'none'"
        assert policy["frame-ancestors"] == "'none'"
        assert policy["require-trusted-types-for"] == "'script'"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        html = page.text
        assert "http://" not in html and "https://" not in html  # nothing from elsewhere
        assert "<script>" not in html  # no inline script
        assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
        assert "style=" not in html and "<style" not in html
        assert 'type="module" src="web/app.js"' in html

        for name, media_type in ASSETS.items():
            asset = http.get(f"{server.url}/web/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-type"].startswith(media_type), name
            assert asset.headers["x-content-type-options"] == "nosniff", name
            assert "content-security-policy" in asset.headers, name
            assert asset.headers["cache-control"] == "no-cache", name
            # revalidation: the same ETag answers 304 without a body
            again = http.get(
                f"{server.url}/web/{name}", headers={"If-None-Match": asset.headers["etag"]}
            )
            assert again.status_code == 304 and again.content == b"", name
        head = http.head(f"{server.url}/")
        assert head.status_code == 200 and head.content == b""

        for missing in ("nope.js", "..%2Fweb_page.py", "../app.py", "%2e%2e/app.py", ""):
            answer = http.get(f"{server.url}/web/{missing}")
            assert answer.status_code == 404, missing
            assert answer.json()["error"]["code"] == "not_found", missing
        # the API still wants its key
        assert http.get(f"{server.api}/conversations").status_code == 401
        # the page is not an operation of the API
        spec = http.get(f"{server.url}/openapi.json").json()
        assert "/" not in spec["paths"]
        assert not any(path.startswith("/web") for path in spec["paths"])


def test_only_known_file_types_are_served(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "app.js").write_text("")
    (tmp_path / "notes.md").write_text("")
    (tmp_path / "secret.py").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.css").write_text("")
    assert web_files(tmp_path) == {
        "app.js": "text/javascript; charset=utf-8",
        "index.html": "text/html; charset=utf-8",
        "sub/x.css": "text/css; charset=utf-8",
    }
    shipped = web_files(WEB_DIR)
    assert set(ASSETS) | {"index.html"} == set(shipped)


def test_page_scripts_never_parse_html() -> None:
    """Agent text reaches the DOM as text only: no HTML-parsing sink in the page's
    scripts (the CSP's Trusted Types would make one throw anyway)."""
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment"
        r"|DOMParser|\beval\(|new Function|setAttribute\(\s*[\"']on"
    )
    for path in sorted(WEB_DIR.glob("*.js")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("//"):
                continue
            assert not sinks.search(line), f"{path.name}:{number}: {line.strip()}"
