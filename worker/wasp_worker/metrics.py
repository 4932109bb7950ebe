"""Prometheus metrics of one worker, read from its session manager at scrape time.

They are served on a port of their own (METRICS_PORT, `wasp.metrics_port`),
not the API's, which takes the master's token.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from wasp_worker.sessions import SessionManager

STATES = ("CONNECTING", "CONNECTED", "DISCONNECTED")


class SessionCollector(Collector):
    def __init__(self, sessions: SessionManager) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        sessions = self._sessions
        yield GaugeMetricFamily(
            "wasp_worker_sessions_active",
            "Sessions held (init, QR or ready).",
            value=sessions.active,
        )
        yield GaugeMetricFamily(
            "wasp_worker_sessions_max",
            "Most sessions this worker holds (MAX_ACTIVE).",
            value=sessions.config.max_active,
        )
        by_state = GaugeMetricFamily("wasp_worker_sessions", "Sessions by state.", labels=["state"])
        counts: Counter[str] = Counter(state.status for state in sessions.states.values())
        for state in STATES:
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state
        backend = sessions.backend
        yield CounterMetricFamily(
            "wasp_worker_reconnects",
            "Session reconnect attempts.",
            value=getattr(backend, "reconnects", 0),
        )
        yield CounterMetricFamily(
            "wasp_worker_breaker_trips",
            "Bad MAC circuit breaker trips.",
            value=getattr(backend, "breaker_trips", 0),
        )


def registry_for(sessions: SessionManager) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SessionCollector(sessions))
    return registry
