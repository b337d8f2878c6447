"""Metrics: the service's counters in the Prometheus text format.

Contract: nothing on the hot path.  Frame and match counts are plain
integers the listeners and the pipeline already keep; a collector reads them
when Prometheus scrapes.  Only the two latency histograms (map write time,
and arrival-to-commit delay) are observed as they happen, a few times a
second at most.  Each service has its own registry, so tests can run several.

How it fails: a scrape never touches the service's state beyond reading
integers; an exception in a collector is Prometheus client's to report.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The registry of one service, with its histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.write_seconds = Histogram(
            "pbsyslog_map_write_seconds", "Time one map commit took (flock, writes, sync).",
            ["output"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.commit_delay = Histogram(
            "pbsyslog_login_to_map_seconds",
            "Delay from a login line's arrival to its IP being committed to the map.",
            ["output"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )

    def watch(self, service: Any) -> None:
        """Expose ``service``'s counters at every scrape."""
        self.registry.register(_ServiceCollector(service))

    def site(self) -> Any:
        """A Twisted web site serving /metrics.

        twisted.web is imported here, when metrics are asked for: otherwise
        it is a noticeable share of the idle service's memory.
        """
        from prometheus_client.twisted import MetricsResource
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        root = Resource()
        root.putChild(b"metrics", MetricsResource(registry=self.registry))
        return Site(root)


class _ServiceCollector:
    """Reads the service's plain counters at scrape time."""

    def __init__(self, service: Any) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        service = self._service
        frames = CounterMetricFamily(
            "pbsyslog_frames_received", "Syslog frames received.", labels=["listener", "transport"])
        dropped = CounterMetricFamily(
            "pbsyslog_frames_dropped", "Frames (or TCP connections) dropped, by reason.",
            labels=["listener", "reason"])
        for listener, c in service.transport_counters:
            name = str(listener)
            frames.add_metric([name, listener.protocol], c.frames)
            for reason, value in (
                ("untrusted_sender", c.untrusted), ("too_big", c.oversize), ("bad_frame", c.bad_frames),
                ("rate_limited", c.rate_limited), ("connection_limit", c.connections_over_limit),
                ("idle_timeout", c.idle_closed), ("silent_evicted", c.silent_evicted),
            ):
                dropped.add_metric([name, reason], value)
        yield frames
        yield dropped

        p = service.pipeline.counters
        parse = CounterMetricFamily("pbsyslog_parse_errors", "Frames that were not syslog messages.")
        parse.add_metric([], p.malformed)
        yield parse
        matches = CounterMetricFamily(
            "pbsyslog_matches", "Lines a pattern matched, by pattern and event.", labels=["pattern", "event"])
        for (pattern, event), value in sorted(p.matches.items()):
            matches.add_metric([pattern, event], value)
        yield matches
        ignored = CounterMetricFamily(
            "pbsyslog_logins_ignored", "Successful logins that authorised nothing, by reason.", labels=["reason"])
        for reason, value in (
            ("mynetworks", p.ignored.get("mynetworks", 0)), ("never_list", p.ignored.get("never", 0)),
            ("special_address", p.ignored.get("special", 0)), ("stale_timestamp", p.stale),
            ("tracker_full", p.full), ("wrong_hostname", p.wrong_host),
        ):
            ignored.add_metric([reason], value)
        yield ignored

        authorised = GaugeMetricFamily("pbsyslog_authorised_ips", "Client IPs currently allowed to relay.")
        authorised.add_metric([], len(service.tracker))
        yield authorised
        writes = CounterMetricFamily("pbsyslog_map_writes", "Batches written, per output.", labels=["output"])
        errors = CounterMetricFamily("pbsyslog_map_write_errors", "Batches that failed, per output.",
                                     labels=["output"])
        outputs = service.outputs
        if outputs is not None:
            for name in outputs.names:
                writes.add_metric([name], outputs.writes[name])
                errors.add_metric([name], outputs.errors[name])
        yield writes
        yield errors
