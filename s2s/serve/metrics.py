"""The counters `/metrics` shows, in Prometheus's text format (prometheus-client): requests
and errors by route and status, latency, and what each model call held. One registry per
app, so several servers in one process (tests) keep their own counts."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from s2s.serve.batcher import BatchStats

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServeMetrics:
    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only repeat the start time
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "s2s_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.errors = Counter(
            "s2s_errors",
            "Requests answered with an error (4xx, 5xx)",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "s2s_request_seconds",
            "Time to answer a request",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "s2s_batch_requests",
            "Requests merged into one model call",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_inputs = Histogram(
            "s2s_batch_inputs",
            "Inputs decoded in one model call",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "s2s_batch_seconds", "Time of one model call", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue = Gauge("s2s_queue_depth", "Requests waiting for the decoder", registry=r)

    def answered(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def batch(self, stats: BatchStats) -> None:
        self.batch_requests.observe(stats.requests)
        self.batch_inputs.observe(stats.inputs)
        self.batch_seconds.observe(stats.seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
