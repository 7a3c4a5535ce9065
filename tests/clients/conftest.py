"""The service tests' fixtures: a tiny Llama checkpoint, the offline LLM on it, a real server."""

from tests.service.conftest import offline, server, text_checkpoint  # noqa: F401
