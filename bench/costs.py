"""Where the time of one line goes: per-line costs of each step, in microseconds.

``.venv/bin/python bench/costs.py`` takes the benchmark's generated log
(200,000 lines, 2 % logins, as ``bench/run.py`` makes it) and prints, best
of several runs: the stream framing (LF and octet-counted), the header
regex alone, ``PatternTable.ignores``, ``Pipeline.feed`` over every line,
and ``feed`` / ``parse`` / ``classify`` for each kind of line that is not
dropped on its header.  Then the UDP socket: what reading one queued
datagram costs with ``recvfrom`` and with ``recvmmsg`` (interleaved runs,
loopback), and how many bytes of receive buffer the kernel charges per
short datagram.  Diagnostic figures, not targets: ``make bench`` has the
figures the benchmarks report.
"""

from __future__ import annotations

import socket
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench

from pbsyslog.inputs import recvmmsg
from pbsyslog.inputs.framing import StreamFramer
from pbsyslog.inputs.udp import set_receive_buffer
from pbsyslog.patterns import load_table
from pbsyslog.pipeline import Pipeline
from pbsyslog.syslog import FAST_PRI_HEADER, parse
from pbsyslog.tracker import Tracker

NOW = 1_800_000_000.0


def best_us(work: Callable[[], object], count: int, repeat: int = 5) -> float:
    """The fastest of ``repeat`` runs of ``work``, per item, in microseconds."""
    return min(timeit.repeat(work, number=1, repeat=repeat)) / count * 1e6


def main() -> None:
    path = bench.genlog(200_000, seed=2, login_frac=0.02, ips=1_000_000)
    frames = [line.rstrip(b"\n") for line in open(bench.datagram_file(path), "rb")]
    table = load_table("all")
    n = len(frames)

    for framing in ("lf", "octet"):
        payload = bench.stream_payload(path, framing, 1)[0]
        chunks = [payload[i:i + 65536] for i in range(0, len(payload), 65536)]

        def frame_all() -> int:
            framer = StreamFramer()
            return sum(len(framer.feed(chunk)) for chunk in chunks)

        print(f"framing {framing:5s}            {best_us(frame_all, n):6.2f} us/line")

    match = FAST_PRI_HEADER.match
    ignores = table.ignores
    print(f"header regex alone        {best_us(lambda: [match(f) for f in frames], n):6.2f} us/line")
    print(f"ignores                   {best_us(lambda: [ignores(f) for f in frames], n):6.2f} us/line")

    def feed_all() -> None:
        feed = Pipeline(table, Tracker(3600), True).feed
        for f in frames:
            feed(f, NOW, None)

    print(f"feed, every line          {best_us(feed_all, n):6.2f} us/line")
    kept = [f for f in frames if not ignores(f)]
    print(f"lines not dropped on their header: {len(kept)} of {n}")
    kinds: dict[str, list[bytes]] = {}
    for f in kept:
        event = table.classify(parse(f))
        kinds.setdefault(event.kind if event is not None else "no event", []).append(f)
    for kind, some in sorted(kinds.items()):
        messages = [parse(f) for f in some]

        def feed_kind(some: list[bytes] = some) -> None:
            feed = Pipeline(table, Tracker(3600), True).feed
            for f in some:
                feed(f, NOW, None)

        print(f"  {kind:9s} {len(some):6d} lines: feed {best_us(feed_kind, len(some)):6.2f}, "
              f"parse {best_us(lambda: [parse(f) for f in some], len(some)):5.2f}, "
              f"classify {best_us(lambda: [table.classify(m) for m in messages], len(some)):5.2f} us/line")


def socket_costs(count: int = 50_000, line: bytes = b"<22>" + b"x" * 120) -> None:
    """recvfrom vs recvmmsg per queued datagram, and the kernel's charge per datagram."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        granted = set_receive_buffer(receiver, 64 << 20)
        address = receiver.getsockname()

        def fill() -> None:
            for _ in range(count):
                sender.sendto(line, address)

        def drain_recvfrom() -> int:
            out = []
            recvfrom = receiver.recvfrom
            try:
                while True:
                    data, peer = recvfrom(65536)
                    out.append((data, peer[0]))
            except BlockingIOError:
                return len(out)

        mm = recvmmsg.Receiver(receiver) if recvmmsg.available() else None

        def drain_recvmmsg() -> int:
            out: list[tuple[bytes, str]] = []
            try:
                while True:
                    mm.receive(out)  # type: ignore[union-attr]
            except BlockingIOError:
                return len(out)

        times: dict[str, list[float]] = {"recvfrom": [], "recvmmsg": []}
        for _ in range(5):
            for name, drain in (("recvfrom", drain_recvfrom), ("recvmmsg", drain_recvmmsg)):
                if name == "recvmmsg" and mm is None:
                    continue
                fill()
                start = time.perf_counter()
                got = drain()
                times[name].append((time.perf_counter() - start) / max(got, 1) * 1e6)
        for name, runs in times.items():
            if runs:
                print(f"read one datagram, {name:8s} {min(runs):6.2f} us (best of {len(runs)})")
        if granted < 8 << 20:
            print(f"receive buffer {granted} bytes: too small to measure the charge per datagram")
            return
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        granted = receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        for _ in range(granted // 200):
            sender.sendto(line, address)
        queued = drain_recvfrom()
        print(f"kernel charge per queued {len(line)}-byte datagram: {granted / queued:.0f} bytes "
              f"({queued} fit in {granted} bytes)")


if __name__ == "__main__":
    main()
    socket_costs()
