"""Load and slow-client attacks on the real service, from loopback: nobody can starve a real login.

A UDP flood of non-matching lines from one sender, a TCP client that
announces a 1 GB octet-counted frame, and a client that trickles bytes must
not delay another client's login past 1 s, must not grow the service's
memory without bound, and must leave it idle afterwards.  The figures (RSS,
latency) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from harness import LOOPBACK_V4, PbsyslogFactory, PbsyslogService, dovecot_login, postmap_q, wait_for

FLOOD_LINES = 200_000
LOGIN_DEADLINE = 1.0
RSS_LIMIT_KB = 200 * 1024

# One sender in its own process (no GIL shared with the test), as fast as it can go.
FLOOD_SCRIPT = r"""
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
lines = [b"<30>Nov 29 14:22:55 vm kernel: eth0: link flap %d, nothing to see here" % i for i in range(256)]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("flooding", flush=True)
sent = 0
for i in range(count):
    try:
        sock.sendto(lines[i & 255], ("127.0.0.1", port))
        sent += 1
    except OSError:
        pass  # ENOBUFS under pressure: the flood goes on
print("sent", sent, flush=True)
"""



def rss_kb(service: PbsyslogService) -> int:
    """The service's resident set size in KiB (VmRSS)."""
    with open(f"/proc/{service.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def cpu_ticks(service: PbsyslogService) -> int:
    """utime + stime of the service, in clock ticks."""
    with open(f"/proc/{service.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5), counted after the comm


def timed_login(service: PbsyslogService, ip: str) -> float:
    """Send one octet-counted login over a new TCP connection; return seconds until postmap -q finds it (inf if not within 5 s)."""
    line = dovecot_login(ip).encode()
    start = time.monotonic()
    with socket.create_connection((LOOPBACK_V4, service.tcp_port), timeout=5) as sock:
        sock.sendall(b"%d %s" % (len(line), line))
        found = wait_for(lambda: postmap_q(ip, service.dbfile) == (0, "OK\n"), 5, interval=0.005)
    return time.monotonic() - start if found else float("inf")


def settles(service: PbsyslogService, timeout: float) -> bool:
    """Wait until the service's CPU time grows by at most one tick over a whole second."""
    def idle() -> bool:
        before = cpu_ticks(service)
        time.sleep(1.0)  # the measuring window itself, not a guess at readiness
        return cpu_ticks(service) - before <= 1
    return bool(wait_for(idle, timeout, interval=0))


@pytest.fixture(scope="module")
def service(pbsyslog_service: PbsyslogFactory) -> PbsyslogService:
    """One service with its default bounds (udp_rate, max_frame, connection caps)."""
    return pbsyslog_service()


@pytest.fixture(scope="module")
def unlimited(pbsyslog_service: PbsyslogFactory) -> PbsyslogService:
    """A service with the per-peer UDP rate limit switched off: every datagram goes through the pipeline."""
    return pbsyslog_service({"udp_rate": 0})


@pytest.mark.parametrize("which", ["default-bounds", "no-udp-rate-limit"])
def test_udp_flood_does_not_delay_a_tcp_login(which: str, request: pytest.FixtureRequest) -> None:
    """While one sender floods UDP with 200,000 lines, a TCP login reaches the map within 1 s, RSS stays bounded, and the service goes idle after."""
    service = request.getfixturevalue("service" if which == "default-bounds" else "unlimited")
    before = rss_kb(service)
    flood = subprocess.Popen(
        [sys.executable, "-c", FLOOD_SCRIPT, str(service.udp_port), str(FLOOD_LINES)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert flood.stdout is not None
        assert flood.stdout.readline().strip() == "flooding"
        flood_start = time.monotonic()
        latency = timed_login(service, "10.20.0.1")
        during = rss_kb(service)
        still_flooding = flood.poll() is None
        out, _ = flood.communicate(timeout=60)
        flood_time = time.monotonic() - flood_start
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    after = rss_kb(service)
    print(f"\nUDP flood ({which}): {out.strip()} in {flood_time:.2f} s; login latency {latency * 1000:.0f} ms; "
          f"RSS before {before} KiB, during {during} KiB, after {after} KiB")
    assert still_flooding, "the flood was over before the login was measured"
    assert latency < LOGIN_DEADLINE, f"the login took {latency:.2f} s to reach the map under a UDP flood"
    assert max(before, during, after) < RSS_LIMIT_KB
    assert settles(service, 10), "the service kept using CPU after the flood ended"
    assert service.proc.poll() is None


class Trickler(threading.Thread):
    """A TCP client that sends ``head`` and then one byte every ``every`` seconds until told to stop."""

    def __init__(self, port: int, head: bytes, every: float) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection((LOOPBACK_V4, port), timeout=5)
        self.head, self.every = head, every
        self.stopping = threading.Event()
        self.sent = 0
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            self.sock.sendall(self.head)
            while not self.stopping.wait(self.every):  # the trickle rate, held on purpose
                self.sock.sendall(b"x")
                self.sent += 1
        except OSError as e:
            self.error = e

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)


def test_huge_count_and_trickling_clients_do_not_delay_a_login(service: PbsyslogService) -> None:
    """A client announcing a 1 GB octet-counted frame and one trickling a byte per 0.2 s neither delay a third client's login nor grow RSS."""
    assert settles(service, 15)
    before = rss_kb(service)
    huge = Trickler(service.tcp_port, b"1000000000 <22>Nov 29 14:22:55 vm dovecot: ", 0.05)
    slow = Trickler(service.tcp_port, b"<22>Nov 29 14:22:55 vm dovecot: pop3-login: Login: ", 0.2)
    huge.start()
    slow.start()
    try:
        assert wait_for(lambda: slow.sent >= 5 and huge.sent >= 20, 5)
        latencies = [timed_login(service, f"10.21.0.{n}") for n in range(1, 6)]
        trickling = rss_kb(service)
        # Now the 1 GB frame's body arrives for real, 64 MiB of it as fast as loopback goes:
        # it must be skipped as it comes, never buffered.
        huge.stopping.set()
        huge.join(5)
        chunk = b"y" * (1 << 20)
        for _ in range(64):
            huge.sock.sendall(chunk)
        latencies.append(timed_login(service, "10.21.0.9"))
        pushed = rss_kb(service)
        assert slow.error is None and huge.error is None, (slow.error, huge.error)
    finally:
        huge.stop()
        slow.stop()
        huge.sock.close()
        slow.sock.close()
    print(f"\nslow clients: login latencies {[round(t * 1000) for t in latencies]} ms; "
          f"RSS before {before} KiB, trickling {trickling} KiB, after 64 MiB of a 1 GB frame {pushed} KiB")
    assert max(latencies) < LOGIN_DEADLINE, f"a login took {max(latencies):.2f} s next to slow clients"
    assert trickling - before < 4 * 1024, f"RSS grew {trickling - before} KiB while two clients trickled"
    assert pushed - before < 8 * 1024, f"RSS grew {pushed - before} KiB after 64 MiB of a skipped 1 GB frame"
    assert service.proc.poll() is None
