"""``/docs`` works without internet access: Swagger UI comes from the server itself.

The page is opened in headless Chromium (Debian's ``chromium``, driven by
Playwright; no browser is downloaded) with every request that would leave
loopback refused, as on a machine without network: it must still render
every operation of the document.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest

from steerline.server.settings import ServerSettings
from tests.server.harness import RunningServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def test_docs_page_loads_only_its_own_assets(server: RunningServer) -> None:
    with httpx2.Client(timeout=10) as http:
        page = http.get(f"{server.url}/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "http://" not in html and "https://" not in html, html
        assert '"validatorUrl": null' in html  # no badge fetched from the validator's site
        for name, media_type in (
            ("swagger-ui-bundle.js", "text/javascript"),
            ("swagger-ui.css", "text/css"),
            ("favicon.png", "image/png"),
        ):
            assert f"/docs/assets/{name}" in html or name == "favicon.png"
            asset = http.get(f"{server.url}/docs/assets/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-type"].startswith(media_type), name
            assert len(asset.content) > 1000, name
        missing = http.get(f"{server.url}/docs/assets/redoc.standalone.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        escape = http.get(f"{server.url}/docs/assets/..%2F__init__.py")
        assert escape.status_code == 404


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM}; scripts/test installs Debian's chromium")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


def test_docs_page_renders_offline_in_chromium(
    make_server: object, chromium: str, tmp_path: Path
) -> None:
    from playwright.sync_api import Route, sync_playwright

    assert callable(make_server)
    server: RunningServer = make_server(ServerSettings(store="memory://", api_keys={"k": "t"}))
    with httpx2.Client(timeout=10) as http:
        spec = http.get(f"{server.url}/openapi.json").json()
    operations = sum(len(item) for item in spec["paths"].values())

    requested: list[str] = []
    refused: list[str] = []
    errors: list[str] = []

    def only_loopback(route: Route) -> None:
        url = route.request.url
        requested.append(url)
        if urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.route("**/*", only_loopback)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{server.url}/docs")
            page.wait_for_selector(".opblock", timeout=20_000)
            assert page.locator(".opblock").count() == operations
            assert page.locator(".opblock-summary-path").first.inner_text()
            # the streams say what they answer: SSE or NDJSON, not JSON
            page.locator(".opblock-post .opblock-summary").first.click()
            page.wait_for_selector(".responses-wrapper", timeout=10_000)
            assert "text/event-stream" in page.locator(".responses-wrapper").first.inner_text()
            page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
        finally:
            browser.close()

    assert refused == [], refused
    assert errors == [], errors
    assert any(url.endswith("/openapi.json") for url in requested), requested
    assert (tmp_path / "docs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("STEERLINE_DOCS_SCREENSHOT"):  # to look at the page by hand
        shutil.copy(tmp_path / "docs.png", os.environ["STEERLINE_DOCS_SCREENSHOT"])
