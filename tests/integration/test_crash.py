"""Crash safety: SIGKILL the real service in the middle of a burst of logins, restart it, and read the map with postmap.

The promise under test (the README's crash promise): after a restart the map opens,
every IP that was authorised before the kill and whose grace has not run
out is still authorised, and nothing whose grace ran out comes back.  The
restarted service uses the same map file, grace and patterns as the killed
one (its listener ports are new ones; they play no part in the state).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

from harness import (
    LOOPBACK_V4,
    PbsyslogFactory,
    PbsyslogService,
    dovecot_login,
    postmap_q,
    run_postmap,
    wait_for,
)

BURST = 2000
# The burst is paced (a rate held on purpose) so that it is still going when
# the kill comes: CHUNK logins every PACE seconds, about 1.3 s in all.
CHUNK = 15
PACE = 0.01
# Kill once at least this many of the burst are in the map.
KILL_AFTER = 300



def octet_counted(line: bytes) -> bytes:
    """``line`` framed as RFC 6587 octet counting."""
    return b"%d %s" % (len(line), line)


def burst_ips(prefix: str, count: int) -> list[str]:
    """``count`` distinct addresses under ``prefix`` (two octets, e.g. "10.1")."""
    return [f"{prefix}.{k // 250}.{k % 250 + 1}" for k in range(count)]


def map_keys(dbfile: Path) -> set[str]:
    """Every key in ``hash:dbfile`` as real postmap lists it; fails if postmap complains."""
    listing = run_postmap("-s", f"hash:{dbfile}")
    assert (listing.returncode, listing.stderr) == (0, ""), f"postmap -s hash:{dbfile}: {listing}"
    return {line.split("\t", 1)[0] for line in listing.stdout.splitlines()}


class PacedSender(threading.Thread):
    """Sends login lines octet-counted over one TCP connection at a held rate, until done or the peer dies."""

    def __init__(self, port: int, ips: list[str]) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.ips = ips
        self.sent = 0
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            with socket.create_connection((LOOPBACK_V4, self.port), timeout=5) as sock:
                for start in range(0, len(self.ips), CHUNK):
                    chunk = self.ips[start:start + CHUNK]
                    sock.sendall(b"".join(octet_counted(dovecot_login(ip).encode()) for ip in chunk))
                    self.sent += len(chunk)
                    time.sleep(PACE)
        except OSError as e:  # the service was killed under us: expected
            self.error = e


def sigkill(service: PbsyslogService) -> None:
    """Kill twistd with SIGKILL (no clean-up of any kind) and reap it."""
    service.proc.send_signal(signal.SIGKILL)
    assert service.proc.wait(10) == -signal.SIGKILL


def test_sigkill_mid_burst_keeps_every_live_authorisation(pbsyslog_service: PbsyslogFactory) -> None:
    """After SIGKILL mid-burst and a restart, postmap opens the map and every IP that was in it before the kill is still there."""
    first = pbsyslog_service({"grace": 1800})
    ips = burst_ips("10.1", BURST)
    sender = PacedSender(first.tcp_port, ips)
    sender.start()
    assert wait_for(lambda: len(map_keys(first.dbfile)) >= KILL_AFTER, 10), (
        f"fewer than {KILL_AFTER} logins reached the map\n{first.describe()}"
    )
    before = map_keys(first.dbfile)
    sigkill(first)
    sent_at_kill = sender.sent
    sender.join(10)
    assert sent_at_kill < BURST, f"the burst had finished ({sent_at_kill} sent) before the kill: not mid-burst"
    assert before <= set(ips), f"the map held addresses nobody sent: {sorted(before - set(ips))[:5]}"

    second = pbsyslog_service({"grace": 1800, "dbfile": str(first.dbfile)})
    after = map_keys(first.dbfile)
    lost = before - after
    assert not lost, (
        f"{len(lost)} of {len(before)} IPs in the map before SIGKILL are gone after the restart, "
        f"e.g. {sorted(lost)[:5]}\n{second.describe()}"
    )
    assert after <= set(ips[:sent_at_kill]), f"after the restart the map holds IPs never sent: {sorted(after - set(ips))[:5]}"
    for ip in sorted(before)[:: max(1, len(before) // 10)]:
        assert postmap_q(ip, first.dbfile) == (0, "OK\n"), f"postmap -q {ip} after the restart"
    assert f"restored {len(after)} authorisations" in second.output() or len(after) == 0, second.describe()


GRACE = 8.0


def send_logins(service: PbsyslogService, ips: list[str]) -> None:
    """Send one octet-counted login per IP over one TCP connection."""
    with socket.create_connection((LOOPBACK_V4, service.tcp_port), timeout=5) as sock:
        sock.sendall(b"".join(octet_counted(dovecot_login(ip).encode()) for ip in ips))


def test_sigkill_then_restart_after_grace_brings_nothing_expired_back(pbsyslog_service: PbsyslogFactory) -> None:
    """Logins whose grace ran out while the service was dead stay out of the map after restart; younger ones stay in."""
    first = pbsyslog_service({"grace": GRACE, "expire_interval": 0.5})
    old = burst_ips("10.2", 200)
    young = burst_ips("10.3", 200)

    old_sent = time.monotonic()
    send_logins(first, old)
    assert wait_for(lambda: set(old) <= map_keys(first.dbfile), 5), first.describe()
    old_in_map = time.monotonic()
    # Half a grace later, the second batch: alive at restart time, the first is not.
    wait_for(lambda: time.monotonic() - old_sent >= GRACE / 2, GRACE)
    young_sent = time.monotonic()
    send_logins(first, young)
    assert wait_for(lambda: set(young) <= map_keys(first.dbfile), 5), first.describe()
    sigkill(first)
    # Both batches were in the map when it died; the old one must not outlive its grace.
    assert (set(old) | set(young)) <= map_keys(first.dbfile)

    wait_for(lambda: time.monotonic() > old_in_map + GRACE + 0.5, GRACE + 1)
    second = pbsyslog_service({"grace": GRACE, "expire_interval": 0.5, "dbfile": str(first.dbfile)})
    after = map_keys(first.dbfile)
    checked = time.monotonic()
    assert checked < young_sent + GRACE, (
        f"the restart took too long ({checked - young_sent:.1f} s after the young logins, grace {GRACE} s): "
        "the test cannot tell 'expired' from 'lost'"
    )
    came_back = set(old) & after
    assert not came_back, (
        f"{len(came_back)} expired IPs came back after the restart, e.g. {sorted(came_back)[:5]}\n{second.describe()}"
    )
    lost = set(young) - after
    assert not lost, f"{len(lost)} live IPs lost across SIGKILL, e.g. {sorted(lost)[:5]}\n{second.describe()}"
    assert postmap_q(old[0], first.dbfile) == (1, "")
    assert postmap_q(young[0], first.dbfile) == (0, "OK\n")
