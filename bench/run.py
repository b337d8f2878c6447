"""pbsyslog benchmark suite: prints one JSON object per figure on stdout.

Run it with ``make bench`` (``make bench BENCH_QUICK=1``: small sizes, one
run each, a few seconds).  Each figure is
``{"name", "value", "unit", "reference": {"name", "value", "unit"}, "ratio"}``
where ``ratio`` is value / reference value.  The reference is measured in the
same run (a floor or a bare receiver) where there is one, else it is the
target the suite was written against.  Values are medians of several runs: these machines are
noisy.  Progress goes to stderr.

Logs come from ``bench/genlog.py`` (seeded), generated into
``/tmp/pbsyslog-bench`` (override with PBSYSLOG_BENCH_CACHE) and reused.
All networking is on 127.0.0.1.

How "fully processed" is measured for a running service (figures 2-4):
after the load, the bench sends login lines for sentinel addresses
(203.0.113.0/24, which genlog never writes) and asks the service's socketmap
until it answers OK for every sentinel.  A connection or socket is read in
order, so by then everything sent before the sentinel has been parsed,
matched and tracked.  UDP datagrams the kernel dropped are read from the
``drops`` column of ``/proc/net/udp`` for the listening socket, for the
service and for the bare drain alike.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
GENLOG = Path(__file__).resolve().parent / "genlog.py"
CACHE = Path(os.environ.get("PBSYSLOG_BENCH_CACHE", "/tmp/pbsyslog-bench"))
PYTHON = sys.executable
BIN = Path(sys.executable).parent
SENTINEL_NET = "203.0.113."


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def emit(name: str, value: float, unit: str, ref_name: str, ref_value: float, ref_unit: str, **extra: Any) -> None:
    """Print one figure as a JSON object on stdout."""
    record = {
        "name": name,
        "value": round(value, 6),
        "unit": unit,
        "reference": {"name": ref_name, "value": round(ref_value, 6), "unit": ref_unit},
        "ratio": round(value / ref_value, 4) if ref_value else None,
    }
    record.update(extra)
    print(json.dumps(record), flush=True)


# --- inputs -----------------------------------------------------------------


def genlog(lines: int, seed: int = 1, **options: Any) -> Path:
    """A generated mail.log (cached by its arguments)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    extra = [f"--{k.replace('_', '-')}={v}" for k, v in sorted(options.items())]
    name = "mail-" + "-".join([str(lines), str(seed), *(e.lstrip("-").replace("=", "") for e in extra)]) + ".log"
    path = CACHE / name
    if not path.exists():
        log(f"generating {path}")
        tmp = path.with_suffix(".tmp")
        subprocess.run(
            [PYTHON, str(GENLOG), "-n", str(lines), "--seed", str(seed), "--quiet", "-o", str(tmp), *extra],
            check=True, stdout=subprocess.DEVNULL,
        )
        tmp.rename(path)
    return path


def sender_binary() -> Path:
    """bench/sender.c compiled into the cache (rebuilt when the source is newer)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    source = BENCH / "sender.c"
    binary = CACHE / "sender"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


# The floor's one regex: the pattern table's Dovecot login regex as it was
# when this suite was written (pinned, so the floor does not move when the
# table does), without its leading "^" since the floor searches whole lines.
FLOOR_REGEX = (
    r"(?:pop3|imap)-login: Login: user=<(?P<user>[^<>\x00-\x1f]*)>, method=[A-Za-z0-9_-]+, "
    r"rip=(?P<ip>[0-9A-Fa-f:.]+), lip=[0-9A-Fa-f:.]+(?:, mpid=[0-9]+)?(?:, (?:secured|TLS(?: handshaking)?))?"
    r"(?:, session=<[A-Za-z0-9+/]+>)?$"
)


FLOOR = """
import re, sys
rx = re.compile(sys.argv[2].encode())
search = rx.search
for line in open(sys.argv[1], "rb"):
    search(line)
"""


def child_cpu(argv: Sequence[str]) -> float:
    """Run a command to completion; return its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def pbsyslog_command() -> list[str]:
    script = BIN / "pbsyslog"
    if script.exists():
        return [str(script)]
    return [PYTHON, "-c", "import sys; from pbsyslog.cli import main; sys.exit(main())"]


# --- figure 1: pbsyslog check ----------------------------------------------------


def bench_check(quick: bool) -> None:
    lines = 20_000 if quick else 1_000_000
    runs = 1 if quick else 5
    path = genlog(lines, login_frac=0.02)
    empty = CACHE / "empty.log"
    empty.write_bytes(b"")
    rx = FLOOR_REGEX
    floor = [PYTHON, "-c", FLOOR]
    check = pbsyslog_command() + ["check"]
    samples: dict[str, list[float]] = {"floor": [], "all": [], "dovecot": [], "floor0": [], "all0": [], "dovecot0": []}
    for i in range(runs):
        # Interleaved, so that a noisy spell hits all of them alike.
        samples["floor"].append(child_cpu(floor + [str(path), rx]))
        samples["all"].append(child_cpu(check + ["--patterns", "all", str(path)]))
        samples["dovecot"].append(child_cpu(check + ["--patterns", "dovecot", str(path)]))
        samples["floor0"].append(child_cpu(floor + [str(empty), rx]))
        samples["all0"].append(child_cpu(check + ["--patterns", "all", str(empty)]))
        samples["dovecot0"].append(child_cpu(check + ["--patterns", "dovecot", str(empty)]))
        log(f"check run {i + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in samples.items()))
    med = {k: statistics.median(v) for k, v in samples.items()}
    floor_rate = lines / med["floor"]
    floor_net = lines / max(med["floor"] - med["floor0"], 1e-9)
    for which in ("all", "dovecot"):
        emit(f"check_{which}_lines_per_s", lines / med[which], "lines/s",
             "floor_one_regex_lines_per_s", floor_rate, "lines/s",
             lines=lines, runs=runs, cpu_s=med[which], floor_cpu_s=med["floor"])
        net = lines / max(med[which] - med[which + "0"], 1e-9)
        emit(f"check_{which}_lines_per_s_without_startup", net, "lines/s",
             "floor_one_regex_lines_per_s_without_startup", floor_net, "lines/s",
             startup_cpu_s=med[which + "0"], floor_startup_cpu_s=med["floor0"])


# --- running services ------------------------------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Settings given on the command line for the service under test.
SERVICE_SETTINGS: dict[str, Any] = {}


def service_config(directory: Path, udp: int, tcp: int, smap: int) -> str:
    """A config for the service under test: no UDP rate limit, room for every address."""
    from pbsyslog.config import Config, ConfigError

    settings = {
        "grace": 3600, "dbfile": f"{directory}/map", "patterns": "all", "udp_rate": 0,
        "max_tracked": 10_000_000, "max_connections": 0, "max_connections_per_peer": 0,
        "mynetworks": "none", **SERVICE_SETTINGS,
    }
    raw: dict[str, Any] = dict(settings)
    raw["listen"] = [
        {"protocol": "udp", "host": "127.0.0.1", "port": udp},
        {"protocol": "tcp", "host": "127.0.0.1", "port": tcp},
    ]
    raw["socketmap"] = [{"host": "127.0.0.1", "port": smap}]
    # Settings that other work in progress may not have yet are left out.
    for key in ("mynetworks",):
        try:
            Config.from_mapping(raw)
        except ConfigError as e:
            if key in str(e):
                del raw[key]
    lines = [f"{k} = {json.dumps(v)}" for k, v in raw.items() if k not in ("listen", "socketmap")]
    for item in raw["listen"]:
        lines += ["[[listen]]"] + [f"{k} = {json.dumps(v)}" for k, v in item.items()]
    lines += ["[[socketmap]]"] + [f"{k} = {json.dumps(v)}" for k, v in raw["socketmap"][0].items()]
    return "\n".join(lines) + "\n"


class Service:
    """The real service under twistd, on loopback ports, in a temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pbsyslog-bench-"))
        self.udp, self.tcp, self.smap = free_port(socket.SOCK_DGRAM), free_port(), free_port()
        conf = self.dir / "pbsyslog.toml"
        conf.write_text(service_config(self.dir, self.udp, self.tcp, self.smap))
        self.proc = subprocess.Popen(
            [str(BIN / "twistd"), "--nodaemon", "--pidfile=", f"--logfile={self.dir}/twistd.log",
             "pbsyslog", "--config", str(conf)],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.map = SocketmapClient(self.smap, wait=20.0)

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    def udp_drops(self) -> int:
        return udp_drops(self.udp)

    def wait_for(self, ips: Sequence[str], resend: Callable[[], None] | None = None, timeout: float = 120.0) -> float:
        """Block until the socketmap answers OK for every IP; return when (monotonic)."""
        pending = list(ips)
        deadline = time.monotonic() + timeout
        last_resend = time.monotonic()
        while pending:
            pending = [ip for ip in pending if not self.map.ok(ip)]
            if not pending:
                break
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"service never authorised {pending[:3]}")
            if resend is not None and now - last_resend > 0.05:
                resend()
                last_resend = now
            time.sleep(0.001)
        return time.monotonic()

    def close(self) -> None:
        self.map.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class SocketmapClient:
    """A Postfix-style socketmap client: ``LEN:NAME KEY,`` -> ``LEN:OK value,``."""

    def __init__(self, port: int, wait: float = 0.0) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buf = b""

    def ok(self, key: str) -> bool:
        payload = f"pop-before-smtp {key}".encode()
        self.sock.sendall(b"%d:%s," % (len(payload), payload))
        while True:
            head, sep, rest = self.buf.partition(b":")
            if sep:
                size = int(head)
                if len(rest) >= size + 1:
                    answer, self.buf = rest[:size], rest[size + 1:]
                    return answer.startswith(b"OK")
            data = self.sock.recv(4096)
            if not data:
                raise RuntimeError("socketmap closed the connection")
            self.buf += data

    def close(self) -> None:
        self.sock.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to 127.0.0.1:port."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want:
            return int(fields[-1])
    return 0


def login_line(ip: str, user: str = "bench") -> bytes:
    stamp = time.strftime("%b %e %H:%M:%S")
    return (f"<22>{stamp} mx1 dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip={ip}, "
            f"lip=198.51.100.25, mpid=4242, TLS, session=<AAAAAAAAAAAA>").encode()


def datagram_file(path: Path) -> Path:
    """The log as RFC 3164 frames with a PRI (what rsyslog forwards), one per line."""
    out = path.with_suffix(".pri")
    if not out.exists():
        with open(path, "rb") as src, open(out.with_suffix(".tmp"), "wb") as dst:
            for line in src:
                dst.write(b"<22>" + line)
        out.with_suffix(".tmp").rename(out)
    return out


_SHARED: dict[str, Any] = {}


def shared_service() -> Service:
    """One service for the figures that need a running one (sentinels keep their loads apart)."""
    if "service" not in _SHARED:
        _SHARED["service"] = Service()
    return _SHARED["service"]


def shared_drain() -> Drain:
    if "drain" not in _SHARED:
        _SHARED["drain"] = Drain()
    return _SHARED["drain"]


def close_shared() -> None:
    for thing in _SHARED.values():
        thing.close()
    _SHARED.clear()


_sentinel_count = 0


def sentinels(count: int) -> list[str]:
    """Fresh sentinel addresses (never sent before in this run)."""
    global _sentinel_count
    first = _sentinel_count
    _sentinel_count += count
    return [f"203.0.{113 + (i >> 8)}.{i & 255}" for i in range(first, first + count)]


class Drain:
    """bench/drain.py: the bare Twisted receiver, for the reference figures."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([PYTHON, str(BENCH / "drain.py"), "0", "0"], stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline().split()
        self.udp, self.tcp = int(ready[1]), int(ready[2])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.05)

    def stat(self) -> tuple[int, int, int, int]:
        while True:
            self.sock.sendto(b"STAT", ("127.0.0.1", self.udp))
            try:
                a, b, c, d = self.sock.recv(200).split()
                return int(a), int(b), int(c), int(d)
            except TimeoutError:
                continue

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    def close(self) -> None:
        self.sock.close()
        self.proc.terminate()
        self.proc.wait(10)


# --- figure 2: UDP ingest --------------------------------------------------------


def bench_udp(quick: bool) -> None:
    lines = 5_000 if quick else 200_000
    runs = 1 if quick else 3
    path = genlog(lines, seed=2, login_frac=0.02, ips=1_000_000)
    frames = datagram_file(path)
    sender = sender_binary()
    svc_rates, svc_drops, ref_rates, ref_drops = [], [], [], []
    for run in range(runs):
        drain = shared_drain()
        if True:
            before = udp_drops(drain.udp)
            base = drain.stat()[0]
            t0 = time.monotonic()
            out = subprocess.run([str(sender), "udp", str(drain.udp), str(frames)],
                                 capture_output=True, text=True, check=True)
            sent = int(out.stdout.split()[0])
            # Done when the count has stopped moving: it was last seen to change at t_end.
            last, t_end, quiet_since = -1, time.monotonic(), time.monotonic()
            while time.monotonic() - quiet_since < 0.1:
                count = drain.stat()[0] - base
                if count != last:
                    last, t_end, quiet_since = count, time.monotonic(), time.monotonic()
                time.sleep(0.002)
            ref_rates.append(count / (t_end - t0))
            ref_drops.append(udp_drops(drain.udp) - before)
        svc = shared_service()
        if True:
            before = svc.udp_drops()
            marks = sentinels(1)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            t0 = time.monotonic()
            out = subprocess.run([str(sender), "udp", str(svc.udp), str(frames)],
                                 capture_output=True, text=True, check=True)
            sent = int(out.stdout.split()[0])
            resend = lambda: sock.sendto(login_line(marks[0]), ("127.0.0.1", svc.udp))  # noqa: E731
            resend()
            t_end = svc.wait_for(marks, resend)
            dropped = svc.udp_drops() - before
            svc_rates.append((sent - dropped) / (t_end - t0))
            svc_drops.append(dropped)
            sock.close()
        log(f"udp run {run + 1}/{runs}: service {svc_rates[-1]:,.0f}/s ({svc_drops[-1]} dropped), "
            f"drain {ref_rates[-1]:,.0f}/s ({ref_drops[-1]} dropped) of {sent}")
    emit("udp_ingest_msgs_per_s", statistics.median(svc_rates), "msgs/s",
         "bare_datagram_protocol_msgs_per_s", statistics.median(ref_rates), "msgs/s",
         sent=sent, dropped=int(statistics.median(svc_drops)),
         reference_dropped=int(statistics.median(ref_drops)), runs=runs)
    emit("udp_ingest_datagrams_dropped", statistics.median(svc_drops) + 1, "datagrams+1",
         "bare_datagram_protocol_dropped", statistics.median(ref_drops) + 1, "datagrams+1",
         sent=sent, note="+1 so that the values stay positive; 1 means none lost")


# --- figure 3: TCP ingest --------------------------------------------------------


def stream_payload(path: Path, framing: str, connections: int) -> list[bytes]:
    """The log split round-robin into one byte string per connection, octet-counted or LF-framed."""
    parts: list[list[bytes]] = [[] for _ in range(connections)]
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            frame = b"<22>" + line.rstrip(b"\n")
            if framing == "octet":
                frame = b"%d %s" % (len(frame), frame)
            else:
                frame += b"\n"
            parts[i % connections].append(frame)
    return [b"".join(p) for p in parts]


def send_streams(port: int, payloads: Sequence[bytes], tails: Sequence[bytes]) -> None:
    """Send each payload (then its tail) on its own connection, all at once, and close them."""
    def one(payload: bytes, tail: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(payload)
            s.sendall(tail)
    threads = [threading.Thread(target=one, args=(p, t)) for p, t in zip(payloads, tails, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def bench_tcp(quick: bool) -> None:
    lines = 5_000 if quick else 200_000
    runs = 1 if quick else 3
    path = genlog(lines, seed=2, login_frac=0.02, ips=1_000_000)
    for framing in ("octet", "lf"):
        for connections in (1, 16):
            payloads = stream_payload(path, framing, connections)
            svc_rates, ref_rates = [], []
            for run in range(runs):
                drain = shared_drain()
                if True:
                    _, bytes0, _, closed0 = drain.stat()
                    t0 = time.monotonic()
                    send_streams(drain.tcp, payloads, [b""] * connections)
                    total = sum(len(p) for p in payloads)
                    while True:
                        _, nbytes, _, closed = drain.stat()
                        if nbytes - bytes0 >= total and closed - closed0 >= connections:
                            break
                        time.sleep(0.001)
                    ref_rates.append(lines / (time.monotonic() - t0))
                svc = shared_service()
                if True:
                    marks = sentinels(connections)
                    tails = []
                    for ip in marks:
                        frame = login_line(ip)
                        tails.append(b"%d %s" % (len(frame), frame) if framing == "octet" else frame + b"\n")
                    t0 = time.monotonic()
                    send_streams(svc.tcp, payloads, tails)
                    svc_rates.append(lines / (svc.wait_for(marks) - t0))
                log(f"tcp {framing} x{connections} run {run + 1}/{runs}: service {svc_rates[-1]:,.0f}/s, "
                    f"drain {ref_rates[-1]:,.0f}/s")
            emit(f"tcp_{framing}_{connections}conn_msgs_per_s", statistics.median(svc_rates), "msgs/s",
                 "bare_twisted_protocol_msgs_per_s", statistics.median(ref_rates), "msgs/s", lines=lines, runs=runs)


# --- figure 4: login -> map latency ------------------------------------------------


def read_map_keys(filename: str) -> set[bytes]:
    """The map's keys as Postfix reads them: a fresh DB_HASH open, read-only, under a shared flock."""
    try:
        from berkeleydb import db  # type: ignore[import-not-found]
    except ImportError:
        from bsddb3 import db  # type: ignore[import-not-found,no-redef]
    d = db.DB()
    d.open(filename, dbtype=db.DB_HASH, flags=db.DB_RDONLY)
    try:
        fcntl.flock(d.fd(), fcntl.LOCK_SH)
        try:
            return set(d.keys())
        finally:
            fcntl.flock(d.fd(), fcntl.LOCK_UN)
    finally:
        d.close()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_latency(quick: bool) -> None:
    """Logins (fresh addresses) at a steady rate with 20x noise, over one LF-framed TCP connection.

    TCP, not UDP: this figure is about delay, and UDP drops would show up as
    logins never seen.  Logins are processed in order, so each poller only
    asks about the oldest login it has not seen yet (the socketmap every
    0.5 ms, the DB file every 5 ms): the probing itself stays light.
    """
    rates = (10, 100, 1000)
    seconds = 0.3 if quick else 5.0
    noise_path = genlog(5_000 if quick else 200_000, seed=3, login_frac=0.0)
    noise = [b"<22>" + line.rstrip(b"\n") + b"\n" for line in open(noise_path, "rb")]
    svc = shared_service()
    filename = str(svc.dir / "map.db")
    counter = 0
    conn = socket.create_connection(("127.0.0.1", svc.tcp))
    try:
        for rate in rates:
            total = max(5, int(rate * seconds))
            order: list[str] = []
            sent_at: dict[str, float] = {}
            seen = {"socketmap": {}, "dbhash": {}}  # type: dict[str, dict[str, float]]
            done = threading.Event()

            def poller(kind: str) -> None:
                client = SocketmapClient(svc.smap) if kind == "socketmap" else None
                mine = seen[kind]
                i = 0
                give_up = None
                try:
                    while i < total:
                        if done.is_set():
                            give_up = give_up or time.monotonic() + 2.0
                            if time.monotonic() > give_up:
                                break
                        if i >= len(order):
                            time.sleep(0.0005)
                            continue
                        if client is not None:
                            if client.ok(order[i]):
                                mine[order[i]] = time.monotonic()
                                i += 1
                                continue
                            time.sleep(0.0005)
                        else:
                            keys = read_map_keys(filename)
                            now = time.monotonic()
                            while i < len(order) and order[i].encode() + b"\0" in keys:
                                mine[order[i]] = now
                                i += 1
                            time.sleep(0.005)
                finally:
                    if client is not None:
                        client.close()

            pollers = [threading.Thread(target=poller, args=(k,)) for k in seen]
            for t in pollers:
                t.start()
            start = time.monotonic()
            k = 0
            for i in range(total):
                due = start + i / rate
                while time.monotonic() < due:
                    time.sleep(min(0.0005, max(0.0, due - time.monotonic())))
                chunk = noise[k % len(noise): k % len(noise) + 20]
                k += 20
                counter += 1
                ip = f"10.{(counter >> 16) & 255}.{(counter >> 8) & 255}.{counter & 255}"
                conn.sendall(b"".join(chunk) + login_line(ip) + b"\n")
                sent_at[ip] = time.monotonic()
                order.append(ip)
            done.set()
            for t in pollers:
                t.join()
            for label, target in (("socketmap", 0.05), ("dbhash", 0.5)):
                got = seen[label]
                delays = [got[ip] - sent_at[ip] for ip in order if ip in got]
                lost = total - len(delays)
                if not delays:
                    delays = [float("inf")]
                p50, p99, mx = percentile(delays, 0.5), percentile(delays, 0.99), max(delays)
                log(f"latency {rate}/s {label}: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
                    f"max {mx * 1000:.1f} ms, {lost} never seen")
                emit(f"latency_{label}_{rate}_per_s_p99", p99 * 1000, "ms", "target_p99", target * 1000, "ms",
                     p50_ms=round(p50 * 1000, 3), max_ms=round(mx * 1000, 3), logins=total, never_seen=lost)
    finally:
        conn.close()


# --- figure 5: expiry at scale (in-process) ---------------------------------------


def self_rss_kib() -> int:
    return rss_kib(os.getpid())


def bench_expiry(quick: bool) -> None:
    import gc

    from pbsyslog.journal import StateJournal
    from pbsyslog.outputs.berkeley import open_output
    from pbsyslog.tracker import Tracker

    n = 20_000 if quick else 1_000_000
    due = 1_000 if not quick else 100
    gc.collect()
    before = self_rss_kib()
    tracker = Tracker(1800.0)
    # `due` addresses log in early (they expire first); the rest later.
    for i in range(n):
        ip = f"{10 + (i >> 24)}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        tracker.login(ip, 0.0 if i < due else 100.0 + i * 1e-6, "dovecot-login")
    gc.collect()
    grown = (self_rss_kib() - before) * 1024
    emit("tracker_bytes_per_ip", grown / n, "bytes", "target", 300, "bytes", tracked=n,
         note="RSS growth / IPs, the address strings included")
    times = []
    for _ in range(1 if quick else 5):
        # A copy, to expire the same state each time: every container one
        # level deep (expire() replaces or pops what it changes below that).
        t = Tracker(1800.0)
        t.__dict__.update({
            name: value.copy() if isinstance(value, (dict, list, set)) else value
            for name, value in vars(tracker).items()
        })
        start = time.perf_counter()
        removed = t.expire(1800.0)
        times.append(time.perf_counter() - start)
        assert len(removed) == due, len(removed)
    emit("expire_tick_ms", statistics.median(times) * 1000, "ms", "target", 5.0, "ms", tracked=n, expired=due)

    directory = Path(tempfile.mkdtemp(prefix="pbsyslog-bench-"))
    try:
        m = open_output("postfix-hash", str(directory / "map"))
        start = time.perf_counter()
        m.apply(add=tracker.ips())
        took = time.perf_counter() - start
        m.close()
        emit("initial_map_write_s", took, "s", "scale_reference", 1.0, "s", entries=n,
             note="no target; the reference is 1 s for scale")
        journal = StateJournal(str(directory / "map.state"))
        journal.compact(tracker.entries())
        journal.close()
        start = time.perf_counter()
        loaded = StateJournal(str(directory / "map.state")).load(0.0)
        restored = Tracker(1800.0)
        for ip, deadline in loaded.deadlines.items():
            restored.restore(ip, deadline, loaded.patterns.get(ip, ""))
        took = time.perf_counter() - start
        assert len(restored) == n
        emit("state_restore_s", took, "s", "scale_reference", 1.0, "s", entries=n,
             note="journal load + tracker restore; no target, reference 1 s for scale")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- figure 6: map commits under a login storm (in-process, task.Clock) --------------


def bench_storm(quick: bool) -> None:
    from twisted.internet.testing import MemoryReactorClock

    from pbsyslog.config import Config
    from pbsyslog.wiring import build

    directory = Path(tempfile.mkdtemp(prefix="pbsyslog-bench-"))
    try:
        raw = {"dbfile": str(directory / "map"), "udp_rate": 0, "mynetworks": "none"}
        try:
            config = Config.from_mapping(raw)
        except Exception:
            del raw["mynetworks"]
            config = Config.from_mapping(raw)
        reactor = MemoryReactorClock()
        reactor.advance(1_700_000_000.0)
        service = build(config, reactor)
        # Not started (no listeners on a fake reactor): just the map, as startService opens it.
        from pbsyslog.outputs import Outputs

        service.outputs = Outputs(config.all_outputs(), reactor.seconds())
        commits: list[float] = []
        real_apply = service.outputs.apply

        def counting_apply(add: Any = (), remove: Any = ()) -> None:
            commits.append(reactor.seconds())
            real_apply(add=add, remove=remove)

        service.outputs.apply = counting_apply  # type: ignore[method-assign]
        logins = 1000
        step = 1.0 / logins
        added_at: dict[str, float] = {}
        for i in range(logins):
            ip = f"10.77.{i >> 8}.{i & 255}"
            service.receive(login_line(ip))
            added_at[ip] = reactor.seconds()
            reactor.advance(step)
        for _ in range(20):
            reactor.advance(0.1)
        latest = max(commits) - max(added_at.values()) if commits else float("nan")
        service.flush()
        service.outputs.close()
        service.journal.close()
        emit("storm_map_commits", len(commits), "commits", "target", 5, "commits",
             logins=logins, over_s=1.0, last_login_to_commit_s=round(latest, 3),
             note="commit_interval default; fake clock, real map file")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- figure 7: idle RSS ----------------------------------------------------------


def bench_idle_rss(quick: bool) -> None:
    """RSS of the service at rest (started, nothing received yet) against the bare drain's."""
    svc = shared_service()
    drain = shared_drain()
    drain.stat()
    time.sleep(0.3)
    emit("idle_service_rss_kib", svc.rss_kib(), "KiB", "bare_twisted_drain_rss_kib", drain.rss_kib(), "KiB")


def bench_expiry_fresh(quick: bool) -> None:
    """Figure 5 in a fresh interpreter, so that RSS growth is not hidden by memory freed earlier."""
    argv = [PYTHON, str(Path(__file__)), "--only", "expiry-here"] + (["--quick"] if quick else [])
    subprocess.run(argv, check=True)


FIGURES: dict[str, Callable[[bool], None]] = {
    "check": bench_check,
    "rss": bench_idle_rss,
    "udp": bench_udp,
    "tcp": bench_tcp,
    "latency": bench_latency,
    "expiry": bench_expiry_fresh,
    "storm": bench_storm,
}
HIDDEN = {"expiry-here": bench_expiry}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each (a few seconds)")
    parser.add_argument("--only", default=",".join(FIGURES), help="comma-separated: " + ",".join(FIGURES))
    parser.add_argument("--udp-receive-buffer", type=int, default=None, metavar="BYTES",
                        help="the service's udp_receive_buffer (default: the service's own default; "
                             "0: the OS default, as the bare drain has)")
    args = parser.parse_args(argv)
    if args.udp_receive_buffer is not None:
        SERVICE_SETTINGS["udp_receive_buffer"] = args.udp_receive_buffer
    quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    try:
        for name in args.only.split(","):
            {**FIGURES, **HIDDEN}[name.strip()](quick)
    finally:
        close_shared()
    return 0


if __name__ == "__main__":
    sys.exit(main())
