"""A cumulative histogram the engine keeps for its own timings (queue wait, grammar compile).

Torch-free and dependency-free: the engine process counts here and ships a snapshot with its
stats; the gateway turns snapshots into Prometheus histograms (service/metrics.py). Observing is a
bisect and two additions, so it is always on.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Sequence

# Seconds; the upper bounds of vLLM's request-time histograms, which cover a fast GPU and a CPU.
TIME_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0, 120.0)


class Histogram:
    """Counts per bucket (upper bounds inclusive, as Prometheus's `le`), their sum and total count.

    `snapshot()` is a plain dict (msgpack-able): {"bounds": [...], "counts": [...], "sum", "count"},
    where counts[i] counts observations in (bounds[i-1], bounds[i]] and the last one those above
    every bound (not cumulative).
    """

    def __init__(self, bounds: Sequence[float] = TIME_BUCKETS_S) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must increase strictly")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum, "count": self.count}
