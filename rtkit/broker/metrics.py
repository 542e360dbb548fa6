"""Prometheus metrics, on a registry of the app's own (two apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class BrokerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rtkit_broker_requests", "Client-secret requests by outcome", ["outcome"], registry=self.registry
        )
        self.latency = Histogram(
            "rtkit_broker_request_seconds",
            "Time to answer a client-secret request",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.cache = Counter("rtkit_broker_cache", "Token cache lookups", ["result"], registry=self.registry)
        self.upstream_errors = Counter(
            "rtkit_broker_upstream_errors", "Failed upstream mints by code", ["code"], registry=self.registry
        )
        self.upstream_latency = Histogram(
            "rtkit_broker_upstream_seconds", "Upstream mint latency", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
