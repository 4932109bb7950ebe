"""Prometheus metrics of the operator: reconciles, their errors and durations, shards by phase."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from wasp.shard import PHASES


class _ShardsByPhase(Collector):
    def __init__(self, phases: dict[tuple[str, str], str]) -> None:
        self._phases = phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "wasp_operator_shards", "WhatsAppShards this operator sees, by phase.", labels=["phase"]
        )
        counts = Tally(self._phases.values())
        for phase in PHASES:
            family.add_metric([phase], counts.get(phase, 0))
        yield family


class OperatorMetrics:
    """The operator's metrics in their own registry (tests run several operators)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "wasp_operator_reconciles_total",
            "Reconciles of WhatsAppShards, by result (ok, conflict, error).",
            ["result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "wasp_operator_reconcile_errors_total",
            "Reconciles that failed and will be retried.",
            registry=self.registry,
        )
        self.duration = Histogram(
            "wasp_operator_reconcile_duration_seconds",
            "Time to reconcile one WhatsAppShard.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self._phases: dict[tuple[str, str], str] = {}
        self.registry.register(_ShardsByPhase(self._phases))
        for result in ("ok", "conflict", "error"):
            self.reconciles.labels(result)

    def reconciled(self, result: str, seconds: float) -> None:
        self.reconciles.labels(result).inc()
        self.duration.observe(seconds)
        if result == "error":
            self.errors.inc()

    def phase_seen(self, namespace: str, name: str, phase: str) -> None:
        self._phases[(namespace, name)] = phase

    def forget(self, namespace: str, name: str) -> None:
        self._phases.pop((namespace, name), None)
