"""A torch-free stand-in for LLMEngine with the same request API, for engine client tests.

Each request emits one token per step: token i of a request is (len(prompt) + i) % 97, its text
f"<{token}>". A prompt "invalid" is refused with ValueError at add time; a prompt "crash" makes
the next step raise. The class pickles as a factory (spawned engine processes build it from config).
"""

from __future__ import annotations

import time

from llm_core.outputs import CompletionDelta


def fake_token(prompt, i: int) -> int:
    return (len(prompt) + i) % 97


class FakeEngine:
    def __init__(self, config=None, *, step_delay_s: float = 0.0, max_num_seqs: int = 4) -> None:
        self.config = config
        self.step_delay_s = step_delay_s
        self.max_num_seqs = max_num_seqs
        self.max_model_len = 128
        self.requests: dict[str, list] = {}  # id -> [prompt, max_tokens, num_generated]
        self.num_aborted = 0
        self.items: dict[str, int] = {}  # uploaded media items: id -> frames so far

    def add_request(self, prompt, params, *, request_id=None, priority=0, arrival_time=None, traceparent=None) -> str:
        if prompt == "invalid":
            raise ValueError("the prompt is invalid")
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        self.requests[request_id] = [prompt, params.max_tokens, 0]
        return request_id

    def abort_request(self, request_ids) -> None:
        for request_id in request_ids:
            if self.requests.pop(request_id, None) is not None:
                self.num_aborted += 1

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def step(self) -> list[CompletionDelta]:
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        deltas = []
        for request_id in list(self.requests)[:self.max_num_seqs]:
            prompt, max_tokens, num_generated = self.requests[request_id]
            if prompt == "crash":
                raise RuntimeError("the model blew up")
            token = fake_token(prompt, num_generated)
            finished = num_generated + 1 == max_tokens
            self.requests[request_id][2] += 1
            if finished:
                del self.requests[request_id]
            deltas.append(CompletionDelta(request_id, (token,), f"<{token}>", finished,
                                          "length" if finished else None, num_prompt_tokens=len(prompt)))
        return deltas

    def add_media_item(self, item_id, modality, data, *, final=True) -> int:
        """Counts an item's frames; modality "crash" raises a bug, any other but video is refused."""
        if modality == "crash":
            raise RuntimeError("the encoder blew up")
        if modality != "video":
            raise ValueError(f"item {item_id!r}: the fake engine takes video only")
        self.items[item_id] = self.items.get(item_id, 0) + len(data)
        return self.items[item_id]

    def delete_media_item(self, item_id) -> bool:
        return self.items.pop(item_id, None) is not None

    def stats(self) -> dict:
        running = min(len(self.requests), self.max_num_seqs)
        return {"num_running": running, "num_waiting": len(self.requests) - running, "num_preemptions": 0,
                "kv_usage": running / self.max_num_seqs, "num_aborted": self.num_aborted,
                "num_media_items": len(self.items)}
