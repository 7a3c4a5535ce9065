"""Acceptance item 5: the browser client (clients/web/) in headless Debian chromium.

Two real gateways on loopback ports, started once for the module: a tiny LLaVA checkpoint (camera,
an uploaded image, tokens, cancel, the API key) and a tiny Qwen2-Audio one (microphone). The page
streams the fake camera and microphone that chromium's flags provide; the server's own answers
(input.committed with a token count that needs the decoded frames or samples, response.done)
show what reached it.

Needs /usr/bin/chromium (`apt-get install -y chromium`) and the `playwright` package; it never
downloads a browser (no `playwright install`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream", "--disable-background-networking", "--disable-gpu",
                 "--disable-component-update"]
API_KEY = "browser-test-key"
LONG_SCHEMA = {"type": "object", "properties": {"story": {"type": "string", "minLength": 1500}},
               "required": ["story"]}
REPO = Path(__file__).resolve().parents[2]
# Hang guards only: nothing asserts on time.
SERVER_START_S = 120
WAIT_MS = 30_000

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing (pip install playwright)")


def _free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_env() -> dict[str, str]:
    """This environment without TRIBUTARY_* settings, which would change the servers' options."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIBUTARY_")}
    return {**env, "PYTHONUNBUFFERED": "1"}


class ServerProcess:
    """`python -m service` on a free loopback port, as a user starts it."""

    def __init__(self, model_dir: Path, log_path: Path, *extra: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "--model", str(model_dir), "--host", "127.0.0.1",
             "--port", str(self.port), "--device", "cpu", "--log-level", "warning", *extra],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=_server_env())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the gateway exited with {self.process.returncode}:\n{self.log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"the gateway did not answer /healthz:\n{self.log_path.read_text()[-4000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory):
    """(vision gateway with an API key, audio gateway without one), started side by side."""
    from tests.helpers.mm_checkpoints import make_llava_checkpoint, make_qwen2_audio_checkpoint

    root = tmp_path_factory.mktemp("browser")
    vision = ServerProcess(make_llava_checkpoint(root / "tiny-llava"), root / "vision.log", "--api-key", API_KEY)
    audio = ServerProcess(make_qwen2_audio_checkpoint(root / "tiny-qwen2-audio"), root / "audio.log")
    try:
        vision.wait_ready()
        audio.wait_ready()
        yield vision, audio
    finally:
        vision.stop()
        audio.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, request):
    """open_page(url, api_key=None, auth_mode="query", encoding="msgpack") -> a connected page.

    Fails the test on any uncaught exception in the page; saves a screenshot when
    BROWSER_TEST_SCREENSHOTS is set.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page_errors: list[str] = []
    pages = []

    def open_page(url, api_key=None, auth_mode="query", encoding="msgpack"):
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        pages.append(page)
        page.goto(url + "/")  # the page connects on load, without a key
        page.wait_for_selector("#conn-state:not([data-state=connecting])")
        if api_key is not None or encoding != "msgpack":
            connect(page, api_key or "", auth_mode, encoding)
        page.wait_for_selector("#conn-state[data-state=open]")
        return page

    yield open_page
    shots = os.environ.get("BROWSER_TEST_SCREENSHOTS")
    for i, page in enumerate(pages):
        if shots:
            page.screenshot(path=str(Path(shots) / f"{request.node.name}-{i}.png"), full_page=True)
    context.close()
    assert not page_errors, page_errors


def stat(page, name: str) -> float:
    return float(page.text_content(f"#stat-{name}"))


def logged_events(page, event_type: str) -> list[dict]:
    """The server events of `event_type` that the page received, from its event log."""
    texts = page.eval_on_selector_all(f'#event-log li[data-type="{event_type}"]', "lis => lis.map(li => li.textContent)")
    return [json.loads(text) for text in texts]


def send_prompt(page, prompt: str, max_tokens: int, temperature: str = "0") -> str:
    """Sends the form; returns the new response's id."""
    num_before = page.locator(".response").count()
    page.fill("#prompt", prompt)
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#temperature", temperature)
    page.click("#send")
    page.wait_for_function(f"document.querySelectorAll('.response').length > {num_before}")
    return page.locator(".response").first.get_attribute("data-response-id")


def wait_done(page, response_id: str) -> dict:
    """Waits for the response's response.done; returns it."""
    page.wait_for_function(
        "id => [...document.querySelectorAll('#event-log li[data-type=\"response.done\"]')]"
        ".some(li => JSON.parse(li.textContent).response_id === id)", arg=response_id)
    return next(e for e in logged_events(page, "response.done") if e["response_id"] == response_id)


def connect(page, api_key: str, auth_mode: str = "query", encoding: str = "msgpack") -> None:
    """Fills the connection form and connects; returns once the attempt has ended."""
    page.fill("#api-key", api_key)
    page.select_option("#auth-mode", auth_mode)
    page.select_option("#encoding", encoding)
    if page.get_attribute("#conn-state", "data-state") in ("open", "connecting"):
        page.click("#connect")  # disconnects
    page.click("#connect")
    page.wait_for_selector("#conn-state:not([data-state=connecting]):not([data-state=closed])")


def test_api_key_errors_are_shown_and_both_ways_of_passing_the_key_work(gateways, open_page):
    vision, _ = gateways
    page = open_page(vision.url, api_key=API_KEY)  # by ?token=
    assert page.get_attribute("#conn-state", "data-state") == "open"
    connect(page, "wrong-key")
    assert page.get_attribute("#conn-state", "data-state") == "error"
    assert "1008" in page.text_content("#conn-state")
    assert "API key" in page.text_content("#errors")
    connect(page, API_KEY, auth_mode="subprotocol")
    assert page.get_attribute("#conn-state", "data-state") == "open"
    assert "tiny-llava" in page.text_content("#conn-state")


def test_camera_frames_and_an_uploaded_image_reach_the_model(gateways, open_page, tmp_path):
    from PIL import Image

    vision, _ = gateways
    page = open_page(vision.url, api_key=API_KEY)
    image_path = tmp_path / "red.png"
    Image.new("RGB", (48, 40), (220, 30, 30)).save(image_path)
    page.set_input_files("#file-input", str(image_path))
    page.fill("#camera-fps", "4")
    page.click("#camera-toggle")
    page.wait_for_function("Number(document.querySelector('#stat-camera-frames').textContent) >= 6")
    assert page.locator("#camera-preview.live").count() == 1
    response_id = send_prompt(page, "What is in the pictures?", max_tokens=4)
    done = wait_done(page, response_id)
    assert done["status"] in ("completed", "incomplete"), done

    # The server decoded the JPEG sequence: its token count is a whole number of frames (>= 1),
    # and the uploaded PNG became one image's tokens.
    committed = {e["item_id"]: e for e in logged_events(page, "input.committed")}
    camera = [e for item_id, e in committed.items() if item_id.startswith("cam-")]
    image = [e for item_id, e in committed.items() if item_id.startswith("file-")]
    assert len(camera) == 1 and len(image) == 1, committed
    tokens_per_image = image[0]["num_tokens"]
    assert tokens_per_image > 0
    assert camera[0]["num_tokens"] >= tokens_per_image
    assert done["usage"]["input_tokens"] > camera[0]["num_tokens"] + tokens_per_image
    assert re.search(r"ready · \d+ tokens", page.text_content("#attachments"))
    assert stat(page, "camera-frames") >= 6
    assert not page.text_content("#errors")
    page.click("#camera-toggle")
    assert page.locator("#camera-preview.live").count() == 0

    # "latest frame" mode: every frame is an image item; a response gets the newest.
    page.uncheck("#attachments input[type=checkbox]")
    page.select_option("#camera-mode", "image")
    num_frames = stat(page, "camera-frames")
    page.click("#camera-toggle")
    page.wait_for_function("n => Number(document.querySelector('#stat-camera-frames').textContent) >= n + 3",
                           arg=num_frames)
    done = wait_done(page, send_prompt(page, "And now?", max_tokens=2))
    frames = [e for e in logged_events(page, "input.committed") if e["item_id"].startswith("frame-")]
    assert frames and all(e["num_tokens"] == tokens_per_image for e in frames), frames
    assert done["usage"]["input_tokens"] > tokens_per_image
    assert logged_events(page, "input.deleted")  # replaced frames are freed on the server
    assert not page.text_content("#errors")


def test_microphone_pcm_reaches_the_model_in_json_frames(gateways, open_page):
    _, audio = gateways
    page = open_page(audio.url, encoding="json")
    page.click("#mic-toggle")
    # Chromium's fake microphone beeps about once a second: wait for a beep, so the audio is not silence.
    page.wait_for_function("Number(document.querySelector('#mic-level').dataset.peak) > 0.05")
    page.wait_for_function("Number(document.querySelector('#stat-mic-chunks').textContent) >= 10")
    assert stat(page, "mic-seconds") >= 1.0
    response_id = send_prompt(page, "What do you hear?", max_tokens=4)
    done = wait_done(page, response_id)
    assert done["status"] in ("completed", "incomplete"), done
    committed = [e for e in logged_events(page, "input.committed") if e["item_id"].startswith("mic-")]
    assert len(committed) == 1 and committed[0]["num_tokens"] > 0, committed
    assert done["usage"]["input_tokens"] > committed[0]["num_tokens"]
    assert not page.text_content("#errors")


def test_tokens_stream_and_cancel_stops_a_long_response(gateways, open_page):
    vision, _ = gateways
    page = open_page(vision.url, api_key=API_KEY)
    response_id = send_prompt(page, "Say something.", max_tokens=6)
    done = wait_done(page, response_id)
    card = page.locator(f'.response[data-response-id="{response_id}"]')
    assert done["usage"]["output_tokens"] >= 1
    assert card.locator(".text").text_content() != ""
    assert f"output {done['usage']['output_tokens']}" in card.locator(".usage").text_content()

    # The schema's minLength forbids an early end-of-sequence: only cancel (or max_tokens, far
    # later) can end this response.
    page.click("#json-schema-panel summary")
    page.fill("#json-schema", json.dumps(LONG_SCHEMA))
    long_id = send_prompt(page, "Tell a very long story.", max_tokens=950)
    long_card = page.locator(f'.response[data-response-id="{long_id}"]')
    page.wait_for_function("id => document.querySelector(`.response[data-response-id='${id}'] .text`)"
                           ".textContent.length > 0", arg=long_id)
    page.click("#cancel")
    done = wait_done(page, long_id)
    assert done["status"] == "cancelled" and done["finish_reason"] == "cancelled", done
    assert done["usage"]["output_tokens"] < 950
    assert long_card.locator(".text").text_content().startswith('{')
    assert long_card.get_attribute("data-status") == "cancelled"
    assert page.is_disabled("#cancel")
