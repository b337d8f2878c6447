"""Wiring: the service assembled from a config, and its sockets bound on a reactor.

Contract: ``build(config, reactor)`` makes the pattern table, the pipeline
and the service (nothing is bound until the service starts);
``bind(service)`` is what the service calls at start-up to open every socket
its config names: the syslog listeners (UDP, TCP, TLS, RELP), the
socketmaps, the control socket and the metrics endpoint, in that order.
Each listener gets its own counters and its own trust settings
(``ListenerTrust``), which a reload replaces in place.  This module decides
which socket serves what; what is done with a frame is the service's and
the pipeline's business.

How it fails: a port that cannot be bound raises out of ``bind`` (twistd
then exits non-zero: a service that cannot listen must not pretend to run);
the sockets already bound are the service's to close.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Callable
from typing import Any

import attrs
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory

from pbsyslog.addresses import bracketed
from pbsyslog.config import Config, Listener, PolicyListener, SocketmapListener
from pbsyslog.control import Admin, ControlFactory
from pbsyslog.inputs.listening import Limits, Listening, TransportCounters
from pbsyslog.inputs.relp import listen_relp
from pbsyslog.inputs.senders import ListenerTrust, SenderFilter
from pbsyslog.inputs.stream import SyslogStreamFactory
from pbsyslog.inputs.tls import server_options
from pbsyslog.inputs.udp import MAX_DATAGRAM, SyslogDatagramProtocol, listen_udp
from pbsyslog.inputs.unix import UnixSyslogProtocol, listen_unix
from pbsyslog.outputs.delegation import PolicyFactory
from pbsyslog.outputs.socketmap import SocketmapFactory
from pbsyslog.patterns import load_table
from pbsyslog.pipeline import Pipeline
from pbsyslog.service import PbsyslogService, logged_never_list

log = Logger(namespace="pbsyslog")

# A scraper or two, an administrator's curl: the metrics endpoint needs few
# connections, and the control socket (one per pbsyslog command) no more.
METRICS_CONNECTIONS = 8
CONTROL_CONNECTIONS = 8


@attrs.frozen
class Bound:
    """What ``bind`` opened: every port (to stop), and per syslog listener its trust and counters."""

    ports: list[Any]
    trust: list[ListenerTrust]  # one per syslog listener, in config order
    counters: list[tuple[Listener, TransportCounters]]


class ConnectionLimit(WrappingFactory):
    """A factory that refuses connections beyond ``limit`` open ones (Twisted then closes them at once)."""

    def __init__(self, wrapped: Any, limit: int) -> None:
        super().__init__(wrapped)
        self.limit = limit
        self.refused = 0

    def buildProtocol(self, addr: Any) -> Any:
        if len(self.protocols) >= self.limit:
            self.refused += 1
            return None
        return super().buildProtocol(addr)


def build(
    config: Config, reactor: Any, reload_config: Callable[[], Config] | None = None
) -> PbsyslogService:
    """Assemble the service for ``config`` on ``reactor`` (nothing is bound until it starts).

    ``reload_config``, when given, is how SIGHUP gets a fresh config.
    """
    table = load_table(config.patterns, extra=config.extra_patterns)
    pipeline = Pipeline.from_config(config, table, logged_never_list(config))
    return PbsyslogService(config, reactor, pipeline, bind, reload_config)


def bind(service: PbsyslogService) -> Bound:
    """Open every socket ``service.config`` names; see the module header."""
    config, reactor = service.config, service.reactor
    ensure_descriptors(descriptors_needed(config))
    limits = Limits(
        max_frame=config.max_frame,
        max_connections=config.max_connections,
        max_connections_per_peer=config.max_connections_per_peer,
        idle_timeout=config.idle_timeout,
        first_frame_timeout=config.first_frame_timeout,
        udp_rate=config.udp_rate,
        udp_receive_buffer=config.udp_receive_buffer,
    )
    ports: list[Any] = []
    trust: list[ListenerTrust] = []
    counters: list[tuple[Listener, TransportCounters]] = []
    for listener in config.listen:
        gate = ListenerTrust(listener.allow, listener.hostnames)
        mine = TransportCounters()
        ports.append(_listen(service, listener, gate, mine, limits))
        trust.append(gate)
        counters.append((listener, mine))
    for sm in config.socketmap:
        ports.append(_listen_socketmap(service, sm))
    for place in config.policy:
        ports.append(_listen_policy(service, place))
    # The service holds the flock on its lock file (one service per map), so
    # a control socket left by a crash is stale: remove it and bind anew.  No
    # PID lock of Twisted's (wantPID): after a SIGKILL its PID may belong to
    # a live process or a zombie, and the service would never start again.
    for stale in (service.files.control, service.files.old_control_lock):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    control = ConnectionLimit(ControlFactory(Admin(service)), CONTROL_CONNECTIONS)
    ports.append(reactor.listenUNIX(service.files.control, control, mode=0o600, wantPID=False))
    if config.metrics is not None:
        host, port = config.metrics
        web = reactor.listenTCP(port, ConnectionLimit(service.metrics.site(), METRICS_CONNECTIONS), interface=host)
        ports.append(web)
        bound = web.getHost()
        log.info("metrics on http://{host}:{port}/metrics", host=bracketed(bound.host), port=bound.port)
    return Bound(ports, trust, counters)


def _listen(
    service: PbsyslogService, listener: Listener, gate: ListenerTrust, counters: TransportCounters, limits: Limits
) -> Any:
    """Bind one syslog listener; its frames go to the service with the listener's pinned hostnames."""
    reactor = service.reactor
    ctx = Listening(
        sink=lambda frame, peer: service.receive(frame, gate.hostnames),
        # RELP acks each frame once it is handled: frame by frame.
        sink_batch=(lambda frames: service.receive_batch(frames, gate.hostnames))
        if listener.protocol != "relp" else None,
        allowed=gate.allows,
        refused=service.refused,
        counters=counters,
        limits=limits,
        clock=reactor,
        tls_peers=listener.tls_peers,
    )
    if listener.protocol == "unix":
        assert listener.path is not None
        port = listen_unix(reactor, listener.path, UnixSyslogProtocol(ctx, listener.uids), MAX_DATAGRAM)
        log.info("listening on unix {path} (senders with uid {uids})", path=listener.path,
                 uids=", ".join(map(str, listener.uids)))
        return port
    if listener.protocol == "udp":
        port = listen_udp(reactor, listener.port, SyslogDatagramProtocol(ctx), listener.host, MAX_DATAGRAM)
    elif listener.protocol == "tls":
        options = server_options(listener.tls_cert, listener.tls_key, listener.tls_ca)
        port = reactor.listenSSL(listener.port, SyslogStreamFactory(ctx), options, interface=listener.host)
    elif listener.protocol == "relp":
        # Acks go out once receive() returned (the login is in the
        # tracker); stopping this port sends serverclose and stops
        # acking, and stopService stops ports before its last flush.
        relp_tls = (server_options(listener.tls_cert, listener.tls_key, listener.tls_ca)
                    if listener.tls_cert is not None else None)
        port = listen_relp(reactor, listener.port, listener.host, ctx, relp_tls)
    else:
        port = reactor.listenTCP(listener.port, SyslogStreamFactory(ctx), interface=listener.host)
    bound = port.getHost()
    proto = listener.protocol + ("+tls" if listener.protocol == "relp" and listener.tls_cert else "")
    log.info("listening on {proto} {host}:{port}", proto=proto, host=bracketed(bound.host), port=bound.port)
    return port


def _listen_socketmap(service: PbsyslogService, sm: SocketmapListener) -> Any:
    """Bind one socketmap (UNIX or TCP), answered from the service's live state."""
    factory = SocketmapFactory(service.lookup, frozenset(sm.names) or None, SenderFilter(sm.allow).allows,
                               service.config.max_connections)
    return _listen_answering(service, sm, factory, "socketmap")


def _listen_policy(service: PbsyslogService, place: PolicyListener) -> Any:
    """Bind one policy service (UNIX or TCP), answered from the service's live state."""
    factory = PolicyFactory(service.authorised, SenderFilter(place.allow).allows, service.config.max_connections)
    return _listen_answering(service, place, factory, "policy service")


def _listen_answering(service: PbsyslogService, place: SocketmapListener | PolicyListener, factory: Any,
                      what: str) -> Any:
    """Bind a service Postfix asks (a UNIX socket at ``place.path``, else TCP at host/port) and say where."""
    if place.path is not None:
        port = service.reactor.listenUNIX(place.path, factory, mode=0o666, wantPID=False)
        log.info("{what} on unix {path}", what=what, path=place.path)
        return port
    port = service.reactor.listenTCP(place.port, factory, interface=place.host)
    bound = port.getHost()
    log.info("{what} on tcp {host}:{port}", what=what, host=bracketed(bound.host), port=bound.port)
    return port


def descriptors_needed(config: Config) -> int:
    """File descriptors the service may hold at once when every configured limit is reached.

    Each stream listener (TCP, TLS, RELP), socketmap and policy service may
    hold ``max_connections``; the metrics endpoint and the control socket a
    few; each listening socket, map file, the journal and the lock one; the
    rest is slack for the reactor, logs and libraries.
    """
    streams = sum(1 for listener in config.listen if listener.protocol in ("tcp", "tls", "relp"))
    served = streams + len(config.socketmap) + len(config.policy)
    sockets = len(config.listen) + len(config.socketmap) + len(config.policy) + 2  # + control, metrics
    files = 2 * len(config.all_outputs()) + 3  # each map (and its lock or connection), journal, lock, control
    return served * config.max_connections + METRICS_CONNECTIONS + CONTROL_CONNECTIONS + sockets + files + 64


def ensure_descriptors(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards ``needed`` if it is lower; warn if the hard limit stops it.

    Under the shipped systemd unit LimitNOFILE sets both limits (and the
    unit's system call filter forbids setrlimit): only the warning is left.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else min(needed, hard),
                                                    hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        log.warn("only {soft} file descriptors (RLIMIT_NOFILE) where the configured connection limits need "
                 "{needed}: lower max_connections or raise the limit (LimitNOFILE= in the systemd unit)",
                 soft=soft, needed=needed)
