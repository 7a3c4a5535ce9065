"""Acceptance 2 of issue 8: GET /metrics parses with prometheus-client's parser, and its counters
move as requests run (a real server, WebSocket and HTTP requests)."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.service.wire import chat, complete, expect, open_ws, run, send, session


def scrape(server) -> dict[str, float]:
    """Every sample of /metrics as {"name{label=value,...}": value} (labels sorted)."""
    response = httpx.get(f"{server.base_url}/metrics", timeout=30, trust_env=False)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def value(samples: dict[str, float], key: str) -> float:
    return samples.get(key if "{" in key else key + "{}", 0.0)


def test_metrics_parse_and_move_with_requests(server):
    before = scrape(server)
    assert value(before, "tributary_engine_up") == 1
    assert value(before, "tributary_kv_cache_blocks_total") > 0
    assert value(before, "tributary_model_info{model=" + server.gateway.config.model_name + "}") == 1
    for name in ("tributary_time_to_first_token_seconds", "tributary_inter_token_latency_seconds",
                 "tributary_e2e_request_latency_seconds", "tributary_request_queue_time_seconds",
                 "tributary_grammar_compile_time_seconds"):
        assert f"{name}_bucket{{le=+Inf}}" in before, name

    async def go():
        async with open_ws(server.ws_url) as ws:
            await session(ws)
            during = await asyncio.to_thread(scrape, server)
            _, done = await complete(ws, "m1", max_tokens=6, ignore_eos=True)
            await send(ws, {"type": "no.such.event"})
            await expect(ws, "error")
            _, constrained = await complete(ws, "m2", max_tokens=4,
                                            response_format={"type": "regex", "pattern": "[ab]{1,4}"})
            return done, constrained, during

    done, constrained, during = run(go())
    assert value(during, "tributary_sessions_open") == value(before, "tributary_sessions_open") + 1
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json={"messages": chat("hi"), "max_tokens": 3},
                          timeout=60, trust_env=False)
    assert response.status_code == 200
    after = scrape(server)

    def grew(key: str) -> float:
        return value(after, key) - value(before, key)

    assert grew("tributary_requests_total{endpoint=ws,status=incomplete}") >= 1
    assert grew("tributary_requests_total{endpoint=http,status=incomplete}") == 1
    output_tokens = done.usage.output_tokens + constrained.usage.output_tokens + response.json()["usage"][
        "completion_tokens"]
    assert grew("tributary_generation_tokens_total") == output_tokens
    assert grew("tributary_prompt_tokens_total") == (done.usage.input_tokens + constrained.usage.input_tokens
                                                      + response.json()["usage"]["prompt_tokens"])
    assert grew("tributary_time_to_first_token_seconds_count") == 3
    assert grew("tributary_e2e_request_latency_seconds_count") == 3
    assert grew("tributary_inter_token_latency_seconds_count") >= 1
    assert grew("tributary_sessions_total") == 1
    assert grew("tributary_received_bytes_total{endpoint=ws}") > 0
    assert grew("tributary_received_bytes_total{endpoint=http}") > 0
    assert grew("tributary_sent_bytes_total{endpoint=ws}") > 0
    assert grew("tributary_errors_total{code=unknown_event}") == 1
    # From the engine's stats.
    assert grew("tributary_engine_steps_total") >= output_tokens / 2
    assert grew("tributary_request_queue_time_seconds_count") == 3
    assert grew("tributary_grammar_compile_time_seconds_count") == 1
    assert grew("tributary_prefix_cache_queries_total") > 0
    assert value(after, "tributary_queued_steps_adopted_total") == 0  # async scheduling is off on the CPU
    assert value(after, "tributary_num_requests_running") == 0 and value(after, "tributary_num_requests_waiting") == 0


def test_several_engines_report_their_sum():
    from service.metrics import merge_engine_stats

    vision = {"num_running": 2, "kv_num_blocks": 100, "kv_num_free_blocks": 60, "kv_usage": 0.4, "num_steps": 7,
              "queue_time_s": {"bounds": [0.1, 1.0], "counts": [1, 2, 0], "sum": 1.5, "count": 3},
              "spec_num_accepted_per_position": [1, 2], "embedding_cache_hits": 4}
    audio = {"num_running": 1, "kv_num_blocks": 300, "kv_num_free_blocks": 300, "kv_usage": 0.0, "num_steps": 5,
             "queue_time_s": {"bounds": [0.1, 1.0], "counts": [0, 1, 1], "sum": 2.5, "count": 2}}
    merged = merge_engine_stats([vision, audio])
    assert merged["num_running"] == 3 and merged["num_steps"] == 12 and merged["embedding_cache_hits"] == 4
    assert merged["kv_num_blocks"] == 400 and merged["kv_usage"] == 1 - 360 / 400
    assert merged["queue_time_s"] == {"bounds": [0.1, 1.0], "counts": [1, 3, 1], "sum": 4.0, "count": 5}
    assert "spec_num_accepted_per_position" not in merged  # lists do not add up
    assert merge_engine_stats([vision]) is vision
