"""The app in a real headless Chromium: upload, ask, watch the answer stream in, a corrupt upload.

Skips (with the reason) where /usr/bin/chromium is missing; install it with
`apt-get install -y chromium`. Leaves a screenshot at artifacts/app.png for CI."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.app.support import EXAMPLES, REPO, app_server
from tests.tiny import save_tiny_model_dir

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = REPO / "artifacts" / "app.png"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (apt-get install -y chromium)"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

# Records every text the last assistant message shows, so streaming can be seen after the fact.
WATCH_ANSWERS = """
window.__answers = [];
new MutationObserver(() => {
  const bots = document.querySelectorAll('#qwen-vl-chat .bot.message');
  if (bots.length) {
    const text = bots[bots.length - 1].innerText;
    if (window.__answers[window.__answers.length - 1] !== text) window.__answers.push(text);
  }
}).observe(document.body, {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = save_tiny_model_dir(tmp_path_factory.mktemp("browser_model"))
    with app_server(model_dir, log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


@pytest.fixture
def page(server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(server[0], wait_until="domcontentloaded")
        page.wait_for_selector("#question textarea", timeout=60_000)
        yield page
        browser.close()


def send(page, files: list[str], question: str) -> None:
    box = page.locator("#question")
    box.locator("input[type=file]").set_input_files(files)
    for path in files:  # the upload has finished when its thumbnail or name shows up
        page.wait_for_function(
            "name => document.querySelector('#question').innerHTML.includes(name)",
            arg=Path(path).name.split(".")[0],
            timeout=30_000,
        )
    asked = len(user_messages(page))
    box.locator("textarea").fill(question)
    box.locator("textarea").press("Enter")
    try:  # a refused or lost submit fails here, by name, rather than as a silent chat later
        page.wait_for_function(
            "n => document.querySelectorAll('#qwen-vl-chat .user.message').length > n", arg=asked, timeout=30_000
        )
    except sync_api.Error:
        raise AssertionError(f"the question was not submitted; {page_state(page)}") from None


def bot_messages(page) -> list[str]:
    return page.locator("#qwen-vl-chat .bot.message").all_inner_texts()


def user_messages(page) -> list[str]:
    return page.locator("#qwen-vl-chat .user.message").all_inner_texts()


def page_state(page) -> str:
    """What the page shows, for a failure message: the chat, the textbox and any toast."""
    textbox = page.locator("#question textarea")
    toasts = page.locator(".toast-body").all_inner_texts()
    return (
        f"users {user_messages(page)!r}, bots {bot_messages(page)!r}, textbox {textbox.input_value()!r} "
        f"(disabled: {textbox.is_disabled()}), toasts {toasts!r}"
    )


def wait_for_bots(page, count: int) -> None:
    """Until the chat holds `count` answers, the last one settled and the textbox enabled again."""
    settled = """n => {
        const bots = document.querySelectorAll('#qwen-vl-chat .bot.message');
        return bots.length >= n && !bots[bots.length - 1].innerText.includes('Loading content')
            && !document.querySelector('#question textarea').disabled;
    }"""
    last = None
    for _ in range(240):
        try:
            page.wait_for_function(settled, arg=count, timeout=120_000)
        except sync_api.Error:
            raise AssertionError(f"no settled answer {count} in 120 s; {page_state(page)}") from None
        text = bot_messages(page)[-1]
        if text == last:
            return
        last = text
        page.wait_for_timeout(500)
    raise AssertionError(f"the answer never settled: {last!r}")


def words(text: str) -> str:
    return re.sub(r"\W+", "", text)


def test_upload_ask_and_watch_the_answer_stream_in(page, server):
    from gradio_client import Client, handle_file

    model_line = page.locator("#model-info").inner_text()
    assert "qwen2_5_vl" in model_line and "parameters" in model_line
    page.evaluate(WATCH_ANSWERS)
    send(page, [str(EXAMPLES / "shapes.png")], "Describe this image.")
    wait_for_bots(page, 1)
    shown = bot_messages(page)[-1]
    expected = Client(server[0], verbose=False).predict(
        [handle_file(str(EXAMPLES / "shapes.png"))], "Describe this image.", 128, 0.0, 1.0, 2.0, 0, api_name="/answer"
    )
    # the page renders Markdown, so compare the letters and digits of the text
    assert words(shown) and words(shown) == words(expected)
    seen = [s for s in page.evaluate("window.__answers") if s.strip() and "Loading content" not in s]
    assert len(seen) >= 2, f"the answer appeared in one piece: {seen}"  # it streamed
    assert all(words(shown).startswith(words(s)) for s in seen), seen  # each piece extends the last
    assert page.locator("#qwen-vl-chat img").count() >= 1  # the upload is shown in the chat
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_corrupt_upload_shows_the_error_and_the_chat_goes_on(page, tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really an image")
    send(page, [str(bad)], "What is in this picture?")
    wait_for_bots(page, 1)
    assert re.search(r"corrupt\.png: not a recognised image format", bot_messages(page)[-1])
    send(page, [str(EXAMPLES / "colour.png")], "What colour is the star?")
    wait_for_bots(page, 2)
    answer = bot_messages(page)[-1]
    assert words(answer) and "not a recognised" not in answer
    page.locator("#undo").click()  # undo puts the question back and drops the last turn
    page.wait_for_function("() => document.querySelectorAll('#qwen-vl-chat .bot.message').length == 1")
    assert page.locator("#question textarea").input_value() == "What colour is the star?"
    page.locator("#clear").click()
    page.wait_for_function("() => document.querySelectorAll('#qwen-vl-chat .bot.message').length == 0")
