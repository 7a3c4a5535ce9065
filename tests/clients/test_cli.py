"""`python -m clients URL --prompt ...` prints the response's tokens as they arrive."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

from llm_core import SamplingParams
from tests.service.wire import chat

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clients", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_cli_prints_the_offline_text_and_usage(server, offline):
    expected = offline.generate({"messages": chat("What shape is red?")},
                                SamplingParams(max_tokens=12, temperature=0.7, seed=3))[0]
    process = cli(server.ws_url, "--prompt", "What shape is red?", "--max-tokens", "12", "--temperature", "0.7",
                  "--seed", "3", "--priority", "1")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.decode() == expected.text + "\n"
    assert f"{len(expected.token_ids)} generated" in err.decode()


def test_cli_streams_before_the_response_ends(server):
    process = cli(server.ws_url, "--prompt", "Go on", "--max-tokens", "900", "--temperature", "0")
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    first = b""
    while not first and time.monotonic() < deadline:
        if selector.select(timeout=1):
            first = os.read(process.stdout.fileno(), 1 << 16)
    running_when_first_text_came = process.poll() is None
    rest, err = process.communicate(timeout=60)
    assert first and running_when_first_text_came
    assert process.returncode == 0, err


def test_cli_reports_a_refusal(server, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "patternProperties": {"a": {}}}')
    process = cli(server.ws_url, "--prompt", "x", "--json-schema", str(schema))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1 and "invalid_schema" in err.decode()
