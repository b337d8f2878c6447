"""The reference receiver for the ingest benchmarks: a bare Twisted server that only counts.

``python bench/drain.py UDP_PORT TCP_PORT`` listens on 127.0.0.1 (0 picks a
port), prints ``READY udp_port tcp_port`` and then counts: datagrams, and TCP
bytes and LFs.  A datagram ``STAT`` from the bench is answered with
``datagrams tcp_bytes tcp_lfs tcp_closed`` (connections closed so far), so the
bench can tell when everything sent has been read.
"""

from __future__ import annotations

import sys

from twisted.internet import protocol, reactor


class Counts:
    datagrams = 0
    tcp_bytes = 0
    tcp_lfs = 0
    tcp_closed = 0


class Drain(protocol.DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: object) -> None:
        if data == b"STAT":
            reply = f"{Counts.datagrams} {Counts.tcp_bytes} {Counts.tcp_lfs} {Counts.tcp_closed}"
            self.transport.write(reply.encode(), addr)
            return
        Counts.datagrams += 1


class StreamDrain(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        Counts.tcp_bytes += len(data)
        Counts.tcp_lfs += data.count(b"\n")

    def connectionLost(self, reason: object) -> None:
        Counts.tcp_closed += 1


def main() -> None:
    udp = reactor.listenUDP(int(sys.argv[1]), Drain(), interface="127.0.0.1", maxPacketSize=65536)
    tcp = reactor.listenTCP(int(sys.argv[2]), protocol.Factory.forProtocol(StreamDrain), interface="127.0.0.1")
    print("READY", udp.getHost().port, tcp.getHost().port, flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
