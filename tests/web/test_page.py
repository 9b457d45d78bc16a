"""The web page in a real browser against real ``steerline serve`` processes
(SPEC §5): streaming, steering, the queue, Stop, resume after a server crash,
history on reload, two browsers on one conversation, inert agent output, API
keys.

Every wait is Playwright's auto-waiting ``expect`` (bounded); nothing sleeps.
The demo agent echoes what it is sent (``Echo: <text>``) and obeys directive
lines: ``/delay MS`` per token, ``/think TEXT``, ``/call TOOL {json}``.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.sync_api import Browser, expect

from tests.server.harness import Served
from tests.web.conftest import start_served
from tests.web.pages import Tab, open_tab


def words(count: int) -> str:
    """Text of ``count`` words: the demo streams one token per word."""
    return " ".join(f"w{i:02d}" for i in range(count))


WORDS = words(40)


def history_text(server: Served, conversation_id: str, kind: str = "message") -> list[str]:
    """The conversation's items of one kind as ``GET …/history`` merges them."""
    with httpx2.Client(timeout=10) as http:
        answer = http.get(f"{server.api}/conversations/{conversation_id}/history")
    assert answer.status_code == 200, answer.text
    return [item.get("content", "") for item in answer.json()["items"] if item["type"] == kind]


def record_answer_texts(tab: Tab) -> None:
    """Record every text the last answer shows, as the page changes it."""
    tab.page.evaluate(
        """() => {
        window.__answerTexts = [];
        new MutationObserver(() => {
            const answers = document.querySelectorAll('#timeline .turn.agent.message');
            const last = answers[answers.length - 1];
            if (last) window.__answerTexts.push(last.textContent);
        }).observe(document.getElementById('timeline'),
                   {childList: true, subtree: true, characterData: true});
    }"""
    )


def test_streams_an_answer_with_reasoning_a_tool_card_and_the_queue(
    browser: Browser, page_server: Served
) -> None:
    tab = open_tab(browser, page_server.url)
    expect(tab.button("Send")).to_be_visible()
    record_answer_texts(tab)
    tab.send(
        "/think First I plan the answer.\n"
        '/call sleep {"seconds": 2}\n'
        "/delay 40\n"
        "Here is **bold** and `code`:\n\n- one\n- two\n\n" + WORDS
    )
    tab.wait_running()
    expect(tab.user("prompt")).to_contain_text("Here is **bold**")  # the user's text, as typed
    # Alt+Enter while it runs: a follow-up, shown in the queue until it is delivered
    tab.send("then summarise in one line", key="Alt+Enter")
    expect(tab.queued("Follow-ups", "then summarise in one line")).to_be_visible()
    running = tab.tools.filter(has_text="sleep")
    expect(running).to_have_attribute("data-state", "running")
    expect(running.locator(".tool-state")).to_have_text("running")
    tab.shot("web-streaming-tool-queue", doc=True)

    # the answer streamed: the page showed it growing, chunk by chunk
    first = tab.answers.first
    expect(first.locator("p")).to_have_text(["Echo: Here is bold and code:", WORDS])
    texts: list[str] = tab.page.evaluate("window.__answerTexts")
    growing = [t for t in dict.fromkeys(texts) if t.startswith("Echo")]
    assert len(growing) >= 10, growing
    assert all(b.startswith(a) for a, b in itertools.pairwise(growing)), growing
    # markdown became elements (built from text nodes)
    expect(first.locator("strong")).to_have_text("bold")
    expect(first.locator("code")).to_have_text("code")
    expect(first.locator("li")).to_have_text(["one", "two"])
    reasoning = tab.page.locator("#timeline details.reasoning").first
    expect(reasoning).to_contain_text("First I plan the answer.")
    expect(reasoning).not_to_have_attribute("open", "")  # collapsed until opened
    reasoning.locator("summary").click()
    expect(reasoning).to_have_attribute("open", "")

    # the tool's result, then the follow-up, answered after the run's own work
    expect(running).to_have_attribute("data-state", "result")
    expect(running.locator(".tool-result")).to_have_text("slept 2s")
    expect(tab.user("follow_up")).to_have_text(re.compile("follow-up.*then summarise in one line"))
    expect(tab.answers.last).to_have_text("Echo: then summarise in one line")
    tab.wait_idle()
    expect(tab.queue).to_be_hidden()
    order = tab.page.locator("#timeline > *").evaluate_all(
        "nodes => nodes.map(n => n.className.split(' ').slice(0, 2).join(' '))"
    )
    assert order.index("turn user") < order.index("turn agent") < order.index("turn user", 1)
    tab.check_clean()
    tab.context.close()


def test_steer_mid_run(browser: Browser, page_server: Served) -> None:
    tab = open_tab(browser, page_server.url)
    tab.send(f'/delay 40\n/call sleep {{"seconds": 2}}\nresearch the topic {words(15)}')
    expect(tab.answers.first).to_contain_text("Echo: research the topic w00")
    tab.wait_running()
    expect(tab.tools.first).to_have_attribute("data-state", "running")
    steer = f"/delay 60\nchange of plan: answer in French {words(20)}"
    tab.send(steer)  # Enter while running: a steer
    # it waits in the steering lane until the policy (after_tool) lets it in:
    # the running sleep finishes, the next turn takes the steer
    expect(tab.lane("Steering")).to_have_text([steer])
    tab.shot("web-steer-queued")
    expect(tab.user("steer")).to_contain_text("change of plan")
    expect(tab.answers.nth(1)).to_contain_text("Echo: change of plan: answer in French w00 w01 w02")
    tab.wait_running()  # mid-run: the steer's answer streams
    tab.shot("web-steer-mid-run", doc=True)
    expect(tab.answers.nth(1)).to_have_text(f"Echo: change of plan: answer in French {words(20)}")
    tab.wait_idle()
    # the steer took the turn the tool result would have had: no "Results:" answer
    expect(tab.answers).to_have_count(2)
    expect(tab.answers.first).to_have_text(f"Echo: research the topic {words(15)}")
    expect(tab.tools.first).to_have_attribute("data-state", "result")
    # in log order: the prompt, its answer, the tool, the steer, the steer's answer
    turns = tab.page.locator("#timeline > .turn")
    expect(turns).to_have_count(5)
    expect(turns.nth(3)).to_have_class(re.compile("delivery-steer"))
    tab.check_clean()
    tab.context.close()


def test_steer_while_tools_run_skips_the_one_behind_the_cap(
    browser: Browser, page_server: Served
) -> None:
    tab = open_tab(browser, page_server.url)
    tab.send("\n".join(['/call sleep {"seconds": 2}'] * 9))  # 8 run at once (the cap)
    tab.wait_running()
    expect(tab.tools.filter(has_text="sleep")).to_have_count(8)  # the ninth waits for a slot
    tab.send("change of plan")
    expect(tab.lane("Steering")).to_have_text(["change of plan"])
    expect(tab.user("steer")).to_contain_text("change of plan")
    expect(tab.answers.last).to_have_text("Echo: change of plan")
    tab.wait_idle()
    # after_tool: the eight running sleeps finish, the ninth (not started) is skipped
    states = tab.tools.evaluate_all("cards => cards.map(card => card.dataset.state)")
    assert sorted(states) == ["result"] * 8 + ["skipped"], states
    skipped = tab.tools.and_(tab.page.locator("[data-state=skipped]"))
    expect(skipped.locator(".tool-state")).to_have_text("skipped")
    expect(skipped.locator(".tool-result")).to_have_text("Skipped due to queued user message.")
    tab.check_clean()
    tab.context.close()


def test_queue_edit_remove_promote_stop_and_send_now(browser: Browser, page_server: Served) -> None:
    tab = open_tab(browser, page_server.url)
    tab.send('/call sleep {"seconds": 60}')
    tab.wait_running()
    for text in ("first follow-up", "second follow-up", "third follow-up"):
        tab.send(text, key="Alt+Enter")
    follow_ups = tab.lane("Follow-ups")
    expect(follow_ups).to_have_text(["first follow-up", "second follow-up", "third follow-up"])

    # edit: the queue changes for every viewer when its queue_updated arrives
    tab.queued("Follow-ups", "second follow-up").get_by_role("button", name="Edit").click()
    editor = tab.page.get_by_role("textbox", name="Edit queued message")
    expect(editor).to_have_value("second follow-up")
    editor.fill("second, edited")
    tab.queue.get_by_role("button", name="Save").click()
    expect(follow_ups).to_have_text(["first follow-up", "second, edited", "third follow-up"])

    # remove
    tab.queued("Follow-ups", "third follow-up").get_by_role("button", name="Remove").click()
    expect(follow_ups).to_have_text(["first follow-up", "second, edited"])

    # promote to steer
    tab.queued("Follow-ups", "first follow-up").get_by_role("button", name="Promote").click()
    expect(tab.lane("Steering")).to_have_text(["first follow-up"])
    expect(follow_ups).to_have_text(["second, edited"])

    # Esc stops the run: the sleep is cancelled, the queue is kept
    tab.message.press("Escape")
    expect(tab.page.locator("#timeline .notice.stopped")).to_contain_text("Stopped")
    expect(tab.tools.first).to_have_attribute("data-state", "cancelled")
    tab.wait_idle()
    expect(tab.lane("Steering")).to_have_text(["first follow-up"])
    expect(follow_ups).to_have_text(["second, edited"])

    # send now: the kept queue starts a run, the steer first
    tab.queue.get_by_role("button", name="Send now").click()
    expect(tab.user("steer")).to_contain_text("first follow-up")
    expect(tab.user("follow_up")).to_contain_text("second, edited")
    expect(tab.answers).to_have_text(["Echo: first follow-up", "Echo: second, edited"])
    tab.wait_idle()
    expect(tab.queue).to_be_hidden()
    tab.check_clean()
    tab.context.close()


def test_stop_button_keeps_the_partial_answer(browser: Browser, page_server: Served) -> None:
    tab = open_tab(browser, page_server.url)
    expect(tab.button("Stop")).to_be_disabled()  # nothing to stop
    tab.send(f"/delay 60\n{WORDS}")
    expect(tab.answers.first).to_contain_text("w01")
    tab.button("Stop").click()
    tab.wait_idle()
    expect(tab.page.locator("#timeline .notice.stopped")).to_be_visible()
    text = tab.answers.first.inner_text()
    assert "w39" not in text, text  # cut where it was stopped
    # the partial answer is what the log has
    assert history_text(page_server, tab.conversation_id) == [text]
    tab.check_clean()
    tab.context.close()


def test_server_killed_mid_answer_then_restarted(
    browser: Browser, served: list[Served], tmp_path: Path
) -> None:
    server = start_served(served, tmp_path)
    tab = open_tab(browser, server.url)
    marker = "kill-marker"
    tab.send(f"/delay 60\n{marker} {WORDS}")
    expect(tab.answers.first).to_contain_text("w05")
    expect(tab.connection).to_have_text("Connected")
    server.kill()  # SIGKILL mid-answer
    expect(tab.connection).to_have_text(re.compile("Reconnecting|Offline"))
    tab.shot("web-reconnecting")
    seen = tab.answers.first.inner_text()
    assert "w39" not in seen, seen
    # a new process on the same port and the same sqlite file
    server = start_served(served, tmp_path, port=server.port)
    expect(tab.connection).to_have_text("Connected", timeout=20_000)
    # recovery ended the lost run; the page resumed after its last event
    expect(tab.page.locator("#timeline .notice.error")).to_have_count(1)  # not once per event
    tab.wait_idle()
    answer = tab.answers.first.inner_text()
    assert answer.startswith(seen), (seen, answer)  # nothing taken back
    expected = f"Echo: {marker} {WORDS}"
    assert expected.startswith(answer), answer  # no chunk twice, none missing
    assert answer.count(marker) == 1
    assert tab.timeline.inner_text().count(marker) == 2  # the prompt, the answer
    assert history_text(server, tab.conversation_id) == [answer]  # what the log has
    # and it goes on: a new message is answered, once
    tab.send("after the restart")
    expect(tab.answers.last).to_have_text("Echo: after the restart")
    tab.wait_idle()
    tab.shot("web-recovered")
    assert tab.timeline.inner_text().count("Echo: after the restart") == 1
    tab.check_clean()
    tab.context.close()


def test_reload_shows_the_history(browser: Browser, page_server: Served) -> None:
    tab = open_tab(browser, page_server.url)
    tab.send('/think plan\n/call echo {"text": "tool says hi"}\n/call nope {}\nhistory **please**')
    expect(tab.answers.last).to_contain_text("Results: echo=tool says hi")
    tab.wait_idle()
    tab.send("and once more", key="Alt+Enter")  # idle: a follow-up starts a run too
    expect(tab.answers.last).to_have_text("Echo: and once more")
    tab.wait_idle()
    url = tab.page.url
    before = tab.timeline.text_content() or ""
    tab.page.reload()
    assert tab.page.url == url  # the hash keeps the conversation
    expect(tab.answers.last).to_have_text("Echo: and once more")
    tab.wait_idle()
    expect(tab.timeline).to_have_text(before)
    expect(tab.answers).to_have_count(3)
    states = tab.tools.evaluate_all("cards => cards.map(card => card.dataset.state)")
    assert states == ["result", "error"], states
    expect(tab.tools.last.locator(".tool-result")).to_have_text("Tool 'nope' not found.")
    expect(tab.tools.last.locator(".tool-state")).to_have_text("error")
    expect(tab.page.locator("#conversation-list [aria-current=page]")).to_contain_text(
        "history please"
    )
    # a page opened on the conversation's URL shows the same
    other = open_tab(browser, url)
    expect(other.timeline).to_have_text(before)
    tab.check_clean()
    other.check_clean()
    other.context.close()
    tab.context.close()


def test_two_browsers_on_one_conversation_stay_in_sync(
    browser: Browser, page_server: Served
) -> None:
    first = open_tab(browser, page_server.url)
    first.send('/call sleep {"seconds": 4}\n/delay 20\nshared ' + words(8))
    first.wait_running()
    second = open_tab(browser, first.page.url)
    expect(second.answers.first).to_contain_text("Echo: shared")
    second.wait_running()
    first.send("steer from the first")
    second.send("follow-up from the second", key="Alt+Enter")
    # each sees what the other queued
    expect(second.lane("Steering")).to_have_text(["steer from the first"])
    expect(first.lane("Follow-ups")).to_have_text(["follow-up from the second"])
    for tab in (first, second):
        expect(tab.user("steer")).to_contain_text("steer from the first")
        expect(tab.user("follow_up")).to_contain_text("follow-up from the second")
        expect(tab.answers.last).to_have_text("Echo: follow-up from the second")
        tab.wait_idle()
    expect(second.timeline).to_have_text(first.timeline.text_content() or "")
    for tab in (first, second):
        tab.check_clean()
        tab.context.close()


def test_agent_output_cannot_inject_html_script_or_links(
    browser: Browser, page_server: Served
) -> None:
    tab = open_tab(browser, page_server.url)
    hostile = (
        "<img src=x onerror=alert(1)> <script>alert(2)</script> "
        "[x](javascript:alert(3)) [y](JaVaScRiPt:alert(4)) [z]( javascript:alert(5)) "
        "[d](data:text/html,<script>alert(6)</script>) [r](//evil.example/x) "
        "<javascript:alert(7)> ![i](https://example.com/i.png) "
        '<a href="javascript:alert(8)">a</a> <iframe src=javascript:alert(9)></iframe> '
        "[ok](https://example.com/ok) [mail](mailto:someone@example.com)"
    )
    tool_text = json.dumps({"text": "<img src=y onerror=alert(10)><b>bold?</b>"})
    tab.send(f"/think <svg onload=alert(11)>\n/call echo {tool_text}\n{hostile}")
    expect(tab.answers.last).to_contain_text("Results: echo=<img src=y onerror=alert(10)>")
    tab.wait_idle()
    tab.page.locator("#timeline details").evaluate_all("nodes => nodes.forEach(n => n.open = true)")
    timeline = tab.page.locator("#timeline")
    # shown as text...
    expect(tab.answers.first).to_contain_text("<img src=x onerror=alert(1)>")
    expect(tab.answers.first).to_contain_text("<script>alert(2)</script>")
    expect(tab.tools.first.locator(".tool-result")).to_have_text(
        "<img src=y onerror=alert(10)><b>bold?</b>"
    )
    # ...never as elements
    for tag in ("img", "script", "iframe", "svg", "b", "object", "embed"):
        expect(timeline.locator(tag)).to_have_count(0)
    expect(tab.page.locator("script")).to_have_count(1)  # the page's own module
    hrefs: list[str] = timeline.locator("a").evaluate_all("links => links.map(a => a.href)")
    assert hrefs == [
        "https://example.com/i.png",
        "https://example.com/ok",
        "mailto:someone@example.com",
    ], hrefs
    ok = timeline.get_by_role("link", name="ok")
    expect(ok).to_have_attribute("rel", "noopener noreferrer")
    expect(ok).to_have_attribute("target", "_blank")
    for label in ("x", "y", "z", "d", "r"):  # shown, as text
        expect(timeline.locator(".unsafe-link", has_text=re.compile(f"^{label}$"))).to_have_count(1)
    assert tab.dialogs == []
    tab.check_clean()
    tab.context.close()


def test_api_keys_ask_for_a_key(
    browser: Browser,
    served: list[Served],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "steerline.toml").write_text('[server]\napi_keys_env = "WEB_TEST_API_KEYS"\n')
    monkeypatch.setenv("WEB_TEST_API_KEYS", "acme:web-test-key")
    server = start_served(served, tmp_path)
    with httpx2.Client(timeout=10) as http:  # the page needs no key, the API does
        assert http.get(server.url + "/").status_code == 200
        assert http.get(f"{server.api}/conversations").status_code == 401

    tab = open_tab(browser, server.url, wait=False)
    dialog = tab.page.get_by_role("dialog", name="API key required")
    expect(dialog).to_be_visible()
    key = dialog.get_by_label("API key")
    expect(key).to_have_attribute("type", "password")
    key.fill("wrong-key")
    dialog.get_by_role("button", name="Connect").click()
    expect(dialog.get_by_role("alert")).to_have_text("That API key was refused.")
    expect(dialog).to_be_visible()
    tab.shot("web-api-key")
    key.fill("web-test-key")
    dialog.get_by_role("button", name="Connect").click()
    expect(dialog).to_be_hidden()
    tab.send("with a key")
    expect(tab.answers.first).to_have_text("Echo: with a key")
    tab.wait_idle()
    assert tab.page.evaluate("sessionStorage.getItem('steerline.apiKey')") == "web-test-key"
    # a reload keeps the key (this tab's sessionStorage) and replays the history
    tab.page.reload()
    expect(tab.answers.first).to_have_text("Echo: with a key")
    expect(dialog).to_be_hidden()
    expect(tab.connection).to_have_text("Connected")
    tab.check_clean()
    tab.context.close()
    # another browser context has no key: asked again
    other = open_tab(browser, server.url, wait=False)
    expect(other.page.get_by_role("dialog", name="API key required")).to_be_visible()
    other.context.close()


def test_narrow_screen(browser: Browser, page_server: Served) -> None:
    tab = open_tab(browser, page_server.url, viewport={"width": 390, "height": 800})
    sidebar = tab.page.get_by_role("complementary", name="Conversations")
    expect(sidebar).not_to_be_in_viewport()
    tab.send("/call clock {}\nsmall screen")
    expect(tab.answers.first).to_have_text("Echo: small screen")
    tab.wait_idle()
    for name in ("Send", "Follow up", "Stop"):
        expect(tab.button(name)).to_be_in_viewport()
    expect(tab.message).to_be_in_viewport()
    tab.shot("web-narrow")
    width: Any = tab.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width  # nothing wider than the screen
    tab.button("Conversations").click()
    expect(sidebar).to_be_in_viewport()
    expect(sidebar.get_by_role("link").first).to_be_visible()
    tab.check_clean()
    tab.context.close()
