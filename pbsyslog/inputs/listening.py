"""What every listener shares: where its frames go, what bounds it, what it counts.

Contract: plain records and two hand-over functions, no I/O.  A transport
(``udp.py``, ``stream.py``, ``relp.py``) gives each complete frame to the
listener's ``sink(frame, peer_host)`` (or a read's frames at once to
``sink_batch``) through ``hand_over``/``deliver``.  A sink must not raise; if
it does anyway, the error is logged here and the connection and the
listener stay up.  Every limit drops input and counts it in the listener's
``TransportCounters``; none of them raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.logger import Logger

Sink = Callable[[bytes, str], None]
BatchSink = Callable[[list[bytes]], None]
Check = Callable[[str], bool]
Notify = Callable[[str], None]

log = Logger()


@attrs.define
class TransportCounters:
    """What one listener received, and what it dropped by reason."""

    frames: int = 0
    untrusted: int = 0
    oversize: int = 0
    bad_frames: int = 0
    rate_limited: int = 0
    connections_over_limit: int = 0
    idle_closed: int = 0
    silent_evicted: int = 0  # connections without a first frame closed to make room for a new one


@attrs.frozen
class Limits:
    """The bounds one listener enforces (0 disables the ones that allow it)."""

    max_frame: int = 65536
    max_connections: int = 256
    max_connections_per_peer: int = 32
    idle_timeout: float = 0.0
    # A stream connection (TCP, TLS, RELP) that has not delivered its first
    # frame (a TLS one still in its handshake included) is closed after this.
    first_frame_timeout: float = 0.0
    udp_rate: float = 0.0  # datagrams per second per peer; burst is one second's worth
    udp_receive_buffer: int = 0  # bytes asked for a UDP socket's receive queue; 0: the OS default


@attrs.frozen
class Listening:
    """Everything a listener's protocols share: where frames go and what bounds them."""

    sink: Sink
    allowed: Check
    refused: Notify
    counters: TransportCounters
    limits: Limits
    clock: Any  # IReactorTime
    tls_peers: tuple[str, ...] = ()  # TLS only: client certificate pins; empty: any cert the CA signed
    # Where the frames of one read go at once (in order); None: one by one to sink.
    sink_batch: BatchSink | None = None


def hand_over(ctx: Listening, frames: list[bytes], peers: Iterable[str]) -> None:
    """Count ``frames`` and give them to the sink: at once to ``sink_batch``, else one by one with their peers."""
    ctx.counters.frames += len(frames)
    if ctx.sink_batch is not None:
        try:
            ctx.sink_batch(frames)
        except Exception:
            log.failure("{n} frames could not be handled", n=len(frames))
        return
    for frame, peer in zip(frames, peers, strict=False):  # peers may be an endless repeat of one peer
        deliver(ctx.sink, frame, peer)


def deliver(sink: Sink, frame: bytes, peer: str) -> None:
    """Give one frame to ``sink``; an error it raises is logged here, never raised into the reactor."""
    try:
        sink(frame, peer)
    except Exception:
        log.failure("frame from {peer} could not be handled", peer=peer)
