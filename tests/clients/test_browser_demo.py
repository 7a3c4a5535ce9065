"""The browser page ready to try the demo models (issue 10): each sample button attaches media made
in the page (a canvas PNG, a JPEG sequence of a moving shape, WAV tones) and fills in a question,
and the shipped demo models, served side by side as `make serve` serves them, answer it.

Needs /usr/bin/chromium and playwright, as tests/clients/test_browser.py (whose helpers it uses).
"""

from __future__ import annotations

import pytest

from tests.clients.test_browser import REPO, ServerProcess, browser, open_page, send_prompt, wait_done  # noqa: F401

DEMO = REPO / "models" / "demo"
# Sample button label -> words its answer must hold.
CASES = {
    "red circle": ("red", "circle"),
    "green triangle as JSON": ('"shape": "triangle"', '"color": "green"'),
    "blue square moving right": ("blue", "square", "right"),
    "440 Hz tone": ("440",),
    "880 Hz tone": ("880",),
    "rising chirp": ("rising",),
    "three beeps": ("three",),
}


@pytest.fixture(scope="module")
def demo_gateway(tmp_path_factory):
    log = tmp_path_factory.mktemp("browser_demo") / "demo.log"
    server = ServerProcess(f"{DEMO / 'vision'},{DEMO / 'audio'}", log, "--served-model-name", "demo")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_each_sample_button_gets_a_right_answer(demo_gateway, open_page):
    page = open_page(demo_gateway.url)
    assert "demo" in page.text_content("#conn-state")
    assert "five shapes" in page.text_content("#samples")
    for label, words in CASES.items():
        page.fill("#prompt", "")
        page.click(f"#sample-buttons button:text-is('{label}')")
        page.wait_for_function("document.querySelector('#prompt').value !== ''")  # set once it is attached
        response_id = send_prompt(page, page.input_value("#prompt"), max_tokens=48)
        done = wait_done(page, response_id)
        text = page.text_content(f".response[data-response-id='{response_id}'] .text")
        assert done["status"] == "completed", (label, done)
        assert all(word in text.lower() for word in words), (label, text)
    # A sample replaces the one before it, so prompts never mix images and audio.
    assert page.locator("#attachments li").count() == 1
    assert not page.text_content("#errors")
