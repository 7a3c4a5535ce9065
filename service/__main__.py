"""`python -m service [--model DIR[,DIR]] [--host H --port P] ...`: serve checkpoints with uvicorn.

Without --model (or TRIBUTARY_MODEL) it serves the trained demo models shipped in models/demo
(docs/demo-model.md): the vision model (images, video) and the audio model side by side. Where
they are missing (an install without them) it falls back to a tiny random checkpoint, built on
first use under .cache/demo-model by `python -m llm_core.demo --build-only` in a subprocess
(building it needs torch, which this process never imports).
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import uvicorn

from service.app import build_app
from service.config import load_config
from service.server import uvicorn_config

DEMO_DIR = Path(".cache/demo-model")
# The shipped demo models, in routing order: text-only requests go to the first.
DEMO_MODELS = tuple(Path(__file__).resolve().parents[1] / "models" / "demo" / name for name in ("vision", "audio"))


def demo_model() -> str:
    if all((path / "config.json").is_file() for path in DEMO_MODELS):
        return ",".join(str(path) for path in DEMO_MODELS)
    if not (DEMO_DIR / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "llm_core.demo", "--build-only", str(DEMO_DIR)], check=True,
                       stdout=subprocess.DEVNULL)
    return str(DEMO_DIR)


def main(argv: list[str] | None = None) -> int:
    config = load_config(argv)
    if config.model is None:
        config = dataclasses.replace(config, model=demo_model(), served_model_name=config.served_model_name or "demo")
    logging.basicConfig(level=config.log_level.upper() if config.log_level != "trace" else "DEBUG",
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        uvicorn.Server(uvicorn_config(config, build_app(config))).run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
