"""The gateway and the Python client run without torch: importing them (and serving the app's
modules) never loads it, so the gateway's GIL and memory stay free of the engine's stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_service_and_clients_do_not_load_torch():
    code = ("import sys, service.__main__, service.app, service.server, service.openai_api, clients, "
            "clients.__main__; from service.config import ServiceConfig; from service.app import build_app; "
            "build_app(ServiceConfig(model='.'));"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
