"""TF Serving's request metrics, under its names, for ``/monitoring/prometheus/metrics``.

Dashboards and alerts written for a real tensorflow/serving (``--monitoring_config_file``
with ``prometheus_config { enable: true }``) read ``:tensorflow:serving:request_count``
``{model_name, status}`` (status: the canonical error code, ``OK``, ``NOT_FOUND`` ...)
and the histogram ``:tensorflow:serving:request_latency{model_name, API, entrypoint}``
in microseconds, buckets 10 x 1.8^i for i < 33 (TF Serving's
``Buckets::Exponential(10, 1.8, 33)``).  chaoskit's server keeps the same, for every
inference request (``predict``, ``classify``, ``regress``), and exposes them with
prometheus-client (imported at the first scrape: its ~70 ms stay out of the server's
cold start, which RTO is measured against).  The count is exposed untyped:
prometheus-client names every counter ``<name>_total``, and the point is TF Serving's
exact sample names.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
CONTENT_TYPE = "text/plain"  # what TF Serving's exporter answers
CODE_OF_HTTP_STATUS = {
    200: "OK", 400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}  # fmt: skip
"""The inverse of TF Serving's ``ToHTTPStatusCode`` where it is one-to-one; 500 is
INTERNAL unless the answer says DATA_LOSS (see :class:`chaoskit.serving.api.ApiError`)."""


class RequestMetrics:
    """Counts and latencies of inference requests, thread-safe, as a prometheus collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._latency: dict[tuple[str, str, str], list[float]] = {}
        """(model, API, entrypoint) -> per-bucket counts (the last: above every limit), sum."""
        self._registry: Any = None

    def observe(self, model: str, api: str, code: str, seconds: float, *,
                entrypoint: str = "REST") -> None:  # fmt: skip
        """One finished request of *model* through *api*, answered with *code*."""
        micros = seconds * 1e6
        index = bisect.bisect_left(LATENCY_BUCKETS_US, micros)  # the first limit >= micros
        with self._lock:
            self._counts[(model, code)] += 1
            cell = self._latency.setdefault(
                (model, api, entrypoint), [0.0] * (len(LATENCY_BUCKETS_US) + 2)
            )
            cell[index] += 1
            cell[-1] += micros

    def collect(self) -> Iterator[Any]:
        """The prometheus-client collector protocol: the families, as of now."""
        from prometheus_client.core import HistogramMetricFamily, Metric

        with self._lock:
            counts = dict(self._counts)
            latency = {key: list(cell) for key, cell in self._latency.items()}
        count = Metric(REQUEST_COUNT, "The total number of requests.", "unknown")
        for (model, code), requests in sorted(counts.items()):
            count.add_sample(REQUEST_COUNT, {"model_name": model, "status": code}, requests)
        yield count
        histogram = HistogramMetricFamily(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            labels=["model_name", "API", "entrypoint"],
        )
        for key, cell in sorted(latency.items()):
            cumulative, buckets = 0.0, []
            for limit, n in zip((*LATENCY_BUCKETS_US, float("inf")), cell[:-1], strict=True):
                cumulative += n
                buckets.append(("+Inf" if limit == float("inf") else f"{limit:g}", cumulative))
            histogram.add_metric(list(key), buckets, cell[-1])
        yield histogram

    def exposition(self) -> bytes:
        """The metrics page in Prometheus' text format."""
        from prometheus_client import CollectorRegistry, generate_latest

        with self._lock:
            if self._registry is None:
                self._registry = CollectorRegistry(auto_describe=False)
                self._registry.register(self)
        return bytes(generate_latest(self._registry))
