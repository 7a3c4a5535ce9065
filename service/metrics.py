"""Prometheus metrics of the gateway and its engine, served at GET /metrics (prometheus-client text).

Two sources. The gateway observes what it sees live: time to first token, inter-token latency,
end-to-end latency, requests by status, tokens, sessions, bytes in and out, errors by code. The engine's numbers (running, waiting, preempted, KV blocks, prefix- and
embedding-cache hits, speculative acceptance, queue and grammar compile times) come from
`engine.stats()`, fetched once per scrape and turned into metric families by EngineCollector.

Each app has its own CollectorRegistry (several apps run in one test process). Names follow
Prometheus's conventions: `tributary_` prefix, base units (seconds, bytes), `_total` counters.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

logger = logging.getLogger(__name__)

STATS_TIMEOUT_S = 5.0  # a scrape never waits longer on the engine

# Seconds. Token latencies are short on a GPU and long on a CPU; request latencies span both.
TOKEN_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUEST_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)


class Metrics:
    """The gateway's metrics and the registry that /metrics renders. `num_sessions` reports the
    sessions open now."""

    def __init__(self, model_name: str, num_sessions: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.time_to_first_token = Histogram(
            "tributary_time_to_first_token_seconds", "From the request's arrival to its first token leaving "
            "the engine", buckets=REQUEST_BUCKETS_S, registry=r)
        self.inter_token_latency = Histogram(
            "tributary_inter_token_latency_seconds", "Time between two deltas of a request divided by the "
            "tokens of the later one", buckets=TOKEN_BUCKETS_S, registry=r)
        self.e2e_latency = Histogram(
            "tributary_e2e_request_latency_seconds", "From the request's arrival to its end",
            buckets=REQUEST_BUCKETS_S, registry=r)
        self.requests = Counter("tributary_requests", "Finished requests by endpoint (ws, http) and status "
                                "(completed, incomplete, cancelled, failed)", ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("tributary_prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.cached_prompt_tokens = Counter("tributary_cached_prompt_tokens", "Prompt tokens served from the "
                                            "prefix cache", registry=r)
        self.generation_tokens = Counter("tributary_generation_tokens", "Generated tokens", registry=r)
        self.sessions = Counter("tributary_sessions", "WebSocket sessions accepted", registry=r)
        self.sessions_open = Gauge("tributary_sessions_open", "WebSocket sessions open now", registry=r)
        self.sessions_open.set_function(num_sessions)
        self.received_bytes = Counter("tributary_received_bytes", "Bytes of WebSocket messages and HTTP "
                                      "request bodies received", ["endpoint"], registry=r)
        self.sent_bytes = Counter("tributary_sent_bytes", "Bytes of WebSocket messages and HTTP response "
                                  "bodies sent", ["endpoint"], registry=r)
        self.errors = Counter("tributary_errors", "Errors reported to clients, by protocol error code",
                              ["code"], registry=r)
        info = Gauge("tributary_model_info", "The served model", ["model"], registry=r)
        info.labels(model_name).set(1)
        self.engine = EngineCollector()
        r.register(self.engine)

    async def render(self, engines) -> bytes:
        """The exposition text, with the engines' stats fetched now (bounded wait). Several served
        models (one engine each) report their sum: blocks, requests and counters add up,
        histograms merge; the engine is up only while every engine runs."""
        engines = list(engines) if isinstance(engines, (list, tuple)) else [engines]
        results = await asyncio.gather(*(self._stats(engine) for engine in engines))
        self.engine.stats = None if any(r is None for r in results) else merge_engine_stats(results)
        return generate_latest(self.registry)

    @staticmethod
    async def _stats(engine) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(engine.stats(), STATS_TIMEOUT_S) if engine.is_running else None
        except Exception as exc:  # the engine died or is stuck: its metrics say so
            logger.warning("engine stats for /metrics failed: %s", exc)
            return None


def merge_engine_stats(all_stats: list[dict[str, Any]]) -> dict[str, Any]:
    """One engine's stats, or the sum of several: numbers add, histogram snapshots with the same
    bounds merge, KV usage is recomputed from the summed blocks; anything else is dropped."""
    if len(all_stats) == 1:
        return all_stats[0]
    merged: dict[str, Any] = {}
    for key in set().union(*all_stats):
        values = [stats[key] for stats in all_stats if key in stats]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            merged[key] = sum(values)
        elif all(isinstance(v, dict) and "bounds" in v for v in values) and \
                all(list(v["bounds"]) == list(values[0]["bounds"]) for v in values):
            merged[key] = {"bounds": list(values[0]["bounds"]), "sum": sum(v["sum"] for v in values),
                           "count": sum(v.get("count", 0) for v in values),
                           "counts": [sum(c) for c in zip(*(v["counts"] for v in values))]}
    merged.pop("kv_usage", None)
    if merged.get("kv_num_blocks"):
        merged["kv_usage"] = 1 - merged.get("kv_num_free_blocks", 0) / merged["kv_num_blocks"]
    return merged


class EngineCollector:
    """Metric families from the engine's latest stats (None: the engine is not running)."""

    def __init__(self) -> None:
        self.stats: dict[str, Any] | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # families vary with the engine (multimodal, speculative): not pre-described

    def collect(self) -> Iterable[Metric]:
        stats = self.stats
        yield GaugeMetricFamily("tributary_engine_up", "1 while the engine runs", value=0 if stats is None else 1)
        if stats is None:
            return
        yield from _gauges(stats, {
            "num_running": ("tributary_num_requests_running", "Requests in the running batch"),
            "num_waiting": ("tributary_num_requests_waiting", "Requests waiting to be scheduled"),
            "num_preempted_waiting": ("tributary_num_requests_preempted", "Waiting requests that were preempted"),
            "kv_num_blocks": ("tributary_kv_cache_blocks_total", "KV cache blocks"),
            "kv_usage": ("tributary_kv_cache_usage_ratio", "Fraction of KV blocks held by requests"),
        })
        if "kv_num_blocks" in stats and "kv_num_free_blocks" in stats:
            yield GaugeMetricFamily("tributary_kv_cache_blocks_used", "KV cache blocks held by requests",
                                    value=stats["kv_num_blocks"] - stats["kv_num_free_blocks"])
        yield from _counters(stats, {
            "num_steps": ("tributary_engine_steps", "Engine steps run"),
            "num_preemptions": ("tributary_preemptions", "Preemptions of running requests"),
            "queued_steps_adopted": ("tributary_queued_steps_adopted", "Multi-step steps run on forwards queued a "
                                     "step ahead (async scheduling)"),
            "queued_steps_dropped": ("tributary_queued_steps_dropped", "Forwards queued a step ahead whose step "
                                     "did not come (their GPU time is lost)"),
            "prefix_cache_queries": ("tributary_prefix_cache_queries", "Prompt tokens looked up in the prefix cache"),
            "prefix_cache_hits": ("tributary_prefix_cache_hits", "Prompt tokens found in the prefix cache"),
            "embedding_cache_hits": ("tributary_embedding_cache_hits", "Media items found in the embedding cache"),
            "embedding_cache_misses": ("tributary_embedding_cache_misses", "Media items that ran an encoder"),
            "spec_num_draft_tokens": ("tributary_spec_decode_draft_tokens", "Speculative draft tokens verified"),
            "spec_num_accepted_draft_tokens": ("tributary_spec_decode_accepted_tokens", "Draft tokens accepted"),
        })
        yield from _ratio("tributary_prefix_cache_hit_ratio", "Prefix-cache hits over queried tokens, since start",
                          stats.get("prefix_cache_hits"), stats.get("prefix_cache_queries"))
        if "embedding_cache_hits" in stats:
            hits, misses = stats["embedding_cache_hits"], stats["embedding_cache_misses"]
            yield from _ratio("tributary_embedding_cache_hit_ratio", "Embedding-cache hits over lookups, since "
                              "start", hits, hits + misses)
        yield from _ratio("tributary_spec_decode_acceptance_ratio", "Accepted over verified draft tokens, since "
                          "start", stats.get("spec_num_accepted_draft_tokens"), stats.get("spec_num_draft_tokens"))
        for key, name, doc in (("queue_time_s", "tributary_request_queue_time_seconds",
                                "From a request's arrival in the scheduler to its first schedule"),
                               ("grammar_compile_time_s", "tributary_grammar_compile_time_seconds",
                                "From a constrained request's arrival to its compiled grammar")):
            if key in stats:
                yield _histogram(name, doc, stats[key])


def _gauges(stats: dict[str, Any], names: dict[str, tuple[str, str]]) -> Iterable[Metric]:
    for key, (name, doc) in names.items():
        if stats.get(key) is not None:
            yield GaugeMetricFamily(name, doc, value=stats[key])


def _counters(stats: dict[str, Any], names: dict[str, tuple[str, str]]) -> Iterable[Metric]:
    for key, (name, doc) in names.items():
        if stats.get(key) is not None:
            yield CounterMetricFamily(name, doc, value=stats[key])


def _ratio(name: str, doc: str, part: float | None, whole: float | None) -> Iterable[Metric]:
    if part is not None and whole:
        yield GaugeMetricFamily(name, doc, value=part / whole)


def _histogram(name: str, doc: str, snapshot: dict[str, Any]) -> Metric:
    """A Prometheus histogram from llm_core.histogram's snapshot (per-bucket counts -> cumulative)."""
    buckets, total = [], 0
    for bound, count in zip(list(snapshot["bounds"]) + [float("inf")], snapshot["counts"]):
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=snapshot["sum"])
