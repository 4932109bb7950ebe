"""The master's Prometheus metrics: routed requests, event fan-out, shards seen."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Proxying adds well under a millisecond; workers answer in milliseconds; wake-ups take seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class MasterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests: dict[tuple[str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self.requests = Counter(
            "wasp_master_requests",
            "API requests routed, by shard and HTTP status code.",
            ["shard", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "wasp_master_request_duration_seconds",
            "Time from a routed request's arrival to its answer, by shard.",
            ["shard"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events_received = Counter(
            "wasp_master_events_received",
            "Distinct live events received from workers, by event name.",
            ["event"],
            registry=self.registry,
        )
        self.events_emitted = Counter(
            "wasp_master_events_emitted",
            "Live events sent to Socket.IO rooms, by event name.",
            ["event"],
            registry=self.registry,
        )
        self.clients = Gauge(
            "wasp_master_socketio_clients",
            "Socket.IO clients connected to this master.",
            registry=self.registry,
        )
        self.shard_up = Gauge(
            "wasp_master_shard_up",
            "1 when the shard's worker answers /health, by shard.",
            ["shard"],
            registry=self.registry,
        )
        self.shard_active = Gauge(
            "wasp_master_shard_sessions_active",
            "Sessions the shard's worker reports in /health, by shard.",
            ["shard"],
            registry=self.registry,
        )
        self.shard_max_active = Gauge(
            "wasp_master_shard_sessions_max_active",
            "The shard's session capacity (maxActive), by shard.",
            ["shard"],
            registry=self.registry,
        )
        self.wakeups = Counter(
            "wasp_master_wakeups",
            "Suspended shards woken by a request, by shard and result.",
            ["shard", "result"],
            registry=self.registry,
        )

        self.scatter_missing = Counter(
            "wasp_master_scatter_missing",
            "Shards left out of a read across shards (a partial answer), by shard and why: "
            "suspended, not_ready, timeout, unreachable, error.",
            ["shard", "why"],
            registry=self.registry,
        )

    def routed(self, shard: str, code: int, seconds: float) -> None:
        """Count one routed request. Label children are cached: this runs on every request."""
        key = (shard, code)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(shard, str(code))
        counter.inc()
        histogram = self._latency.get(shard)
        if histogram is None:
            histogram = self._latency[shard] = self.latency.labels(shard)
        histogram.observe(seconds)

    def forget(self, shard: str) -> None:
        """A deleted shard's gauges go away with it."""
        for gauge in (self.shard_up, self.shard_active, self.shard_max_active):
            with contextlib.suppress(KeyError):
                gauge.remove(shard)
