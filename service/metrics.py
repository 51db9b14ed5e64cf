"""Prometheus metrics (``prometheus_client``: the standard exposition format and histogram maths,
not worth re-implementing). One registry per app, so several apps in one process stay apart. Under ``lcs serve
--workers N`` (PROMETHEUS_MULTIPROC_DIR set before the workers start) every worker writes its values there and
/metrics, whichever worker answers, sums them: prometheus_client's multiprocess mode."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.latency = Histogram(
            "lcs_request_seconds",
            "Request latency by route and status",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram("lcs_batch_samples", "Samples per decoder batch", buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram(
            "lcs_batch_requests", "Requests per decoder batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "lcs_queue_samples", "Samples waiting for the batcher", registry=r, multiprocess_mode="livesum"
        )
        self.rejected = Counter("lcs_rejected_total", "Requests refused by the batcher", ["reason"], registry=r)
        self.labelset_requests = Counter(
            "lcs_labelset_requests_total", "Requests per label set and mode", ["labelset", "mode"], registry=r
        )
        self.realism = Histogram(
            "lcs_realism_score",
            "Critic realism D(z, y) of served latents",
            ["labelset"],
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0),
            registry=r,
        )
        self.jobs = Counter("lcs_jobs_total", "Training jobs by final state", ["state"], registry=r)
        self.jobs_running = Gauge(
            "lcs_jobs_running", "Training jobs running on this server", registry=r, multiprocess_mode="livesum"
        )
        # every worker loads every label set: the most any worker has, not the sum
        self.labelsets_loaded = Gauge("lcs_labelsets_loaded", "Label sets serving", registry=r, multiprocess_mode="max")
        self.versions_alive = Gauge(
            "lcs_labelset_versions_in_memory", "Label-set versions still in memory", registry=r, multiprocess_mode="max"
        )

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            every = CollectorRegistry()
            multiprocess.MultiProcessCollector(every)
            return generate_latest(every)
        return generate_latest(self.registry)
