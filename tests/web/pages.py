"""What the web page tests do and look at, by the names a user (or a screen
reader) sees: the ``Message`` textbox, the ``Send``/``Steer``/``Follow up``/
``Stop`` buttons, the queue's lanes."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("STEERLINE_WEB_ARTIFACTS", ROOT / "test-artifacts" / "web"))
"""Screenshots of every test (gitignored; CI may upload them)."""
DOC_IMAGES = ROOT / "docs" / "images"
DESKTOP = {"width": 1280, "height": 800}


@dataclass
class Tab:
    """One browser context with the page open; records what went wrong in it."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    # -- the controls --------------------------------------------------------------
    @property
    def message(self) -> Locator:
        return self.page.get_by_role("textbox", name="Message", exact=True)

    def button(self, name: str) -> Locator:
        return self.page.get_by_role("button", name=name, exact=True)

    @property
    def timeline(self) -> Locator:
        return self.page.get_by_role("log", name="Conversation")

    @property
    def answers(self) -> Locator:
        return self.page.locator("#timeline .turn.agent.message")

    @property
    def users(self) -> Locator:
        return self.page.locator("#timeline .turn.user")

    def user(self, delivery: str) -> Locator:
        return self.page.locator(f"#timeline .turn.user.delivery-{delivery}")

    @property
    def tools(self) -> Locator:
        return self.page.locator("#timeline details.tool")

    @property
    def connection(self) -> Locator:
        return self.page.locator("#connection-text")

    @property
    def queue(self) -> Locator:
        return self.page.get_by_role("region", name="Queue")

    def lane(self, name: str) -> Locator:
        """The texts of a lane's queued messages (``Steering`` or ``Follow-ups``)."""
        return self.queue.get_by_role("region", name=name).locator("li.queued .queued-text")

    def queued(self, name: str, text: str) -> Locator:
        """A queued message of a lane, with its buttons."""
        region = self.queue.get_by_role("region", name=name)
        return region.locator("li.queued").filter(has_text=text)

    # -- actions ------------------------------------------------------------------------
    def send(self, text: str, key: str = "Enter") -> None:
        """Type ``text`` and press ``key`` (Enter: send or steer; Alt+Enter: follow up)."""
        self.message.fill(text)
        self.message.press(key)
        expect(self.message).to_have_value("")  # accepted (a refused send puts it back)

    def wait_idle(self) -> None:
        expect(self.button("Send")).to_be_visible()
        expect(self.page.locator("#run-status")).to_have_text("Idle")

    def wait_running(self) -> None:
        expect(self.button("Steer")).to_be_visible()

    @property
    def conversation_id(self) -> str:
        match = re.search(r"#c=([^&]+)", self.page.url)
        assert match, self.page.url
        return unquote(match.group(1))

    def shot(self, name: str, *, doc: bool = False) -> Path:
        """A screenshot in the artifacts; ``doc``: also the one in docs/images when
        ``STEERLINE_UPDATE_DOC_IMAGES`` is set (how docs/web.md's were made)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), animations="disabled")  # no half-faded pulse
        if doc and os.environ.get("STEERLINE_UPDATE_DOC_IMAGES"):
            DOC_IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOC_IMAGES / f"{name}.png")
        return path

    def check_clean(self) -> None:
        """No script error, no CSP or Trusted Types violation, no dialog."""
        assert self.errors == [], self.errors
        assert self.dialogs == [], self.dialogs


def open_tab(
    browser: Browser, url: str, viewport: dict[str, int] | None = None, *, wait: bool = True
) -> Tab:
    """A new browser context (its own sessionStorage) with the page at ``url``."""
    context = browser.new_context(viewport=viewport or DESKTOP)  # type: ignore[arg-type]
    page = context.new_page()
    tab = Tab(context, page)

    def on_console(message: object) -> None:
        text = getattr(message, "text", "")
        if getattr(message, "type", "") == "error" and re.search(
            r"Content Security Policy|Trusted Type|Uncaught", text
        ):
            tab.errors.append(text)

    def on_dialog(dialog: object) -> None:
        tab.dialogs.append(getattr(dialog, "message", ""))
        dialog.dismiss()  # type: ignore[attr-defined]

    page.on("pageerror", lambda error: tab.errors.append(f"pageerror: {error}"))
    page.on("console", on_console)
    page.on("dialog", on_dialog)
    page.goto(url)
    if wait:
        expect(tab.message).to_be_visible()
    return tab
