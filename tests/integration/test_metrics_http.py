"""The Prometheus endpoint of the real service: scraped over HTTP, counters move."""

from __future__ import annotations

import socket
import urllib.request

from harness import LOOPBACK_V4, PbsyslogFactory, free_port, postmap_q, wait_for


def scrape(port: int) -> str:
    """GET /metrics from the service."""
    with urllib.request.urlopen(f"http://{LOOPBACK_V4}:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


def value(text: str, line_start: str) -> float:
    """The value of the first sample line starting with ``line_start``."""
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {line_start!r} in:\n{text}")


def test_metrics_endpoint_counts_a_login(pbsyslog_service: PbsyslogFactory) -> None:
    """With --metrics, /metrics serves Prometheus text whose frame, match and gauge values move after a login."""
    port = free_port(socket.SOCK_STREAM)
    svc = pbsyslog_service(extra_args=["--metrics", f"{LOOPBACK_V4}:{port}"])
    before = scrape(port)
    assert value(before, "pbsyslog_authorised_ips ") == 0
    svc.send_udp(
        "<22>Nov 29 14:22:55 vm dovecot: pop3-login: Login: user=<a>, method=PLAIN, "
        "rip=192.0.2.50, lip=127.0.0.1, mpid=1, session=<x>"
    )
    assert wait_for(lambda: postmap_q("192.0.2.50", svc.dbfile) == (0, "OK\n"), 2), svc.describe()
    after = scrape(port)
    assert value(after, 'pbsyslog_frames_received_total{listener="udp') == 1
    assert value(after, 'pbsyslog_matches_total{event="login",pattern="dovecot-login"}') == 1
    assert value(after, "pbsyslog_authorised_ips ") == 1
    assert value(after, 'pbsyslog_login_to_map_seconds_count{output="postfix-hash"}') == 1
