"""Prometheus metrics, in a registry of the app's own so that several apps (tests) coexist.

With several worker processes a scrape reaches one of them, which must still report every
worker's counts: prometheus_client's multiprocess mode, as its documentation describes it.
`python -m server` puts PROMETHEUS_MULTIPROC_DIR (a fresh directory) in the environment before
anything imports prometheus_client, the workers inherit it, every value then lives in a file
there, and `/metrics` reads them all through a MultiProcessCollector. Without the variable
(an app in one process, the tests), the values live in the process.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from server.config import METRICS_DIR_VARIABLE
from server.errors import ApiError

# Requests take about a millisecond; the default buckets start at 5 ms and would hide that.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


# Any other method a client invents is counted as "other": label values are never unbounded.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


class Metrics:
    def __init__(self, model_names: list[str], device: str, classes: list[str]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "http_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer a request",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queued = Counter(
            "http_requests_queued",
            "Requests that found every thread of their lane busy (light: no body, quick: a "
            "small body, bulk: a large one)",
            ["lane"],
            registry=r,
        )
        self.images = Counter(
            "predict_images",
            "Images received for prediction (POST /predict and the page's form)",
            registry=r,
        )
        self.rejected = Counter(
            "predict_rejected_images", "Images refused, by error code", ["code"], registry=r
        )
        self.predictions = Counter("predictions", "Answers by voted digit", ["digit"], registry=r)
        self.disagreements = Counter(
            "prediction_disagreements", "Answers where the models did not all agree", registry=r
        )
        self.ties = Counter(
            "prediction_ties_broken", "Answers decided by the tie-break", registry=r
        )
        self.uncertain = Counter("prediction_uncertain", "Answers flagged uncertain", registry=r)
        self.batch = Histogram(
            "predict_batch_size",
            "Images per /predict request",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        info = Gauge(
            "model_info",
            "The loaded bundle",
            ["models", "device"],
            registry=r,
            multiprocess_mode="max",  # the same in every worker: one series, not one per pid
        )
        info.labels(models=",".join(model_names), device=device).set(1)
        # What a scrape reads: this registry, or every process's files in multiprocess mode
        # (the collector reads them at each scrape). prometheus_client chose the mode when it
        # was imported, from the same variable.
        self._scraped = r
        if os.environ.get(METRICS_DIR_VARIABLE):
            self._scraped = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._scraped)
        # Labelled children, looked up once here rather than by `labels()` on every request.
        self._by_digit = {i: self.predictions.labels(digit=c) for i, c in enumerate(classes)}
        self._by_request: dict[tuple, tuple] = {}

    def exposition(self) -> bytes:
        """The text a scrape gets: every worker's values when they share them."""
        return generate_latest(self._scraped)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Counts one answered request and its latency."""
        method = method if method in METHODS else "other"
        children = self._by_request.get((route, method, status))
        if children is None:
            children = self._by_request[route, method, status] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def record(self, answers: list) -> None:
        """Counts each answer of Predictor.predict: a refusal by its code, a result by digit."""
        for a in answers:
            if isinstance(a, ApiError):
                self.rejected.labels(code=a.code).inc()
                continue
            self._by_digit[a.label].inc()
            if a.agreement < len(a.models):
                self.disagreements.inc()
            if a.tie_broken:
                self.ties.inc()
            if a.uncertain:
                self.uncertain.inc()
