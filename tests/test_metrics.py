"""Metrics: the Prometheus text exposes counters that move with what the service does."""

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_service import LOGIN, start


def scrape(service: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the service's registry as Prometheus would scrape it."""
    text = generate_latest(service.metrics.registry).decode()  # type: ignore[attr-defined]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_move(tmp_path: Path) -> None:
    """Frames, matches, authorised IPs, map writes and latency histograms all move after logins."""
    service, reactor = start(tmp_path)
    udp = reactor.udp[0][1]
    udp.datagramReceived(LOGIN % b"192.0.2.1", ("127.0.0.1", 5000))
    udp.datagramReceived(LOGIN % b"192.0.2.2", ("127.0.0.1", 5000))
    udp.datagramReceived(b"<22>garbage without structure", ("127.0.0.1", 5000))
    udp.datagramReceived(LOGIN % b"192.0.2.3", ("192.0.2.200", 5000))  # untrusted sender
    reactor.advance(0)
    m = scrape(service)
    listener = (("listener", "udp 127.0.0.1:5514"), ("transport", "udp"))
    assert m[("pbsyslog_frames_received_total", listener)] == 3
    assert m[("pbsyslog_frames_dropped_total", (("listener", "udp 127.0.0.1:5514"), ("reason", "untrusted_sender")))] == 1
    assert m[("pbsyslog_matches_total", (("event", "login"), ("pattern", "dovecot-login")))] == 2
    assert m[("pbsyslog_authorised_ips", ())] == 2
    assert m[("pbsyslog_map_writes_total", (("output", f"postfix-hash:{tmp_path}/map"),))] == 1
    assert m[("pbsyslog_map_write_errors_total", (("output", f"postfix-hash:{tmp_path}/map"),))] == 0
    assert m[("pbsyslog_login_to_map_seconds_count", (("output", "postfix-hash"),))] == 2
    assert m[("pbsyslog_map_write_seconds_count", (("output", "postfix-hash"),))] == 1
    service.stopService()


def test_ignored_logins_by_reason(tmp_path: Path) -> None:
    """A loopback login without authorise_loopback is counted under special_address."""
    service, reactor = start(tmp_path)
    service.receive(LOGIN % b"127.0.0.9")
    assert scrape(service)[("pbsyslog_logins_ignored_total", (("reason", "special_address"),))] == 1
    service.stopService()
