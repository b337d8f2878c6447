"""Configuration: one frozen ``Config`` built from a TOML mapping.

Contract: ``Config.from_mapping(raw)`` is pure and validates everything a
running service would trip over later (types, ranges, address literals,
unknown keys), raising ``ConfigError`` with the offending key named.
``load(path)`` is the only function here that touches a file.  Nothing in
this module binds a port or opens the map: a bad config must stop the
process before that.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pbsyslog.inputs.senders import LOOPBACK, is_loopback_only, parse_network

PROTOCOLS = ("udp", "tcp", "tls", "relp")
_LISTENER_KEYS = ("allow", "host", "hostnames", "port", "protocol", "tls_ca", "tls_cert", "tls_key", "tls_peers")


class ConfigError(ValueError):
    """The configuration (file or options) is not usable; the message says why."""


@attrs.frozen
class Listener:
    """One socket to listen on for forwarded syslog."""

    protocol: str
    host: str
    port: int
    # Sender networks (CIDR strings, normalised) allowed to send to this listener.
    allow: tuple[str, ...] = LOOPBACK
    # Syslog HOSTNAMEs this listener accepts (lowercase); empty: any.
    hostnames: tuple[str, ...] = ()
    # protocol "tls" (and "relp" over TLS) only: PEM files, and optional
    # client certificate pins (names, or "sha256:AB:CD:..." fingerprints).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_peers: tuple[str, ...] = ()

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.protocol} {host}:{self.port}"


@attrs.frozen
class SocketmapListener:
    """Where pbsyslog answers Postfix/Sendmail socketmap lookups from live state."""

    host: str | None = None
    port: int = 0
    path: str | None = None  # a UNIX socket instead of host/port
    names: tuple[str, ...] = ()  # map names answered; empty: any
    allow: tuple[str, ...] = LOOPBACK

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix {self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"tcp {host}:{self.port}"


# The map flavours pbsyslog can write (pbsyslog.outputs.berkeley.OUTPUT_KINDS; a test
# keeps the two equal, and this module stays free of the Berkeley DB binding).
MAP_KINDS = ("postfix-hash", "postfix-btree", "sendmail-access", "sendmail-popauth", "exim-dbm")


# The output kind that is a PostgreSQL table instead of a Berkeley DB file.
PGSQL_KIND = "pgsql"
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


@attrs.frozen
class OutputSpec:
    """One map to keep: its kind, path (as the MTA names it) and value (None: the kind's default).

    Kind "pgsql": path is "pgsql:TABLE", and dsn (a libpq connection
    string), table and source_host (None: this host's name) say where.
    """

    kind: str
    path: str
    value: str | None = None
    dsn: str | None = None
    table: str | None = None
    source_host: str | None = None


DEFAULT_LISTENERS = (
    Listener("udp", "127.0.0.1", 5514),
    Listener("tcp", "127.0.0.1", 5514),
)


@attrs.frozen
class Config:
    """Everything the service needs to run, validated."""

    grace: float = 1800.0
    expire_interval: float = 10.0
    commit_interval: float = 0.25
    dbfile: str = "var/pop-before-smtp"
    map_value: str = "OK"
    map_kind: str = "postfix-hash"  # the flavour of the map at dbfile
    outputs: tuple[OutputSpec, ...] = ()  # more maps, written with the same changes
    patterns: tuple[str, ...] | str = "all"
    extra_patterns: tuple[Mapping[str, Any], ...] = ()
    authorise_loopback: bool = False
    authorise_link_local: bool = False
    # Postfix's mynetworks: "postconf" (ask the local Postfix at start-up),
    # "none", or a list of networks.  Clients there relay anyway: never added.
    mynetworks: tuple[str, ...] | str = "postconf"
    never: tuple[str, ...] = ()  # networks never to authorise
    insecure_remote: bool = False
    max_frame: int = 65536
    max_connections: int = 256
    max_connections_per_peer: int = 32
    idle_timeout: float = 86400.0
    udp_rate: float = 20000.0
    udp_receive_buffer: int = 32 << 20  # bytes asked for each UDP socket's receive queue (0: the OS default)
    max_tracked: int = 1_000_000
    # Logout tracking: an open session keeps its IP authorised (at most
    # max_session seconds); two-line logins: connect lines remembered.
    logout_tracking: bool = True
    max_session: float = 86400.0
    max_pending: int = 10_000
    pending_age: float = 300.0
    listen: tuple[Listener, ...] = DEFAULT_LISTENERS
    socketmap: tuple[SocketmapListener, ...] = ()
    metrics: tuple[str, int] | None = None  # (host, port) of the Prometheus endpoint

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Config:
        """Build a Config from a parsed TOML document; raise ConfigError naming any bad key."""
        known = {
            "grace", "expire_interval", "commit_interval", "dbfile", "map_kind", "output", "map_value", "patterns",
            "pattern", "authorise_loopback", "authorise_link_local", "mynetworks", "never", "insecure_remote",
            "max_frame", "listen", "max_connections", "max_connections_per_peer", "idle_timeout", "udp_rate",
            "udp_receive_buffer", "max_tracked",
            "socketmap", "metrics", "logout_tracking", "max_session", "max_pending", "pending_age",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        kwargs: dict[str, Any] = {}
        if "grace" in raw:
            kwargs["grace"] = _seconds(raw["grace"], "grace")
        if "expire_interval" in raw:
            kwargs["expire_interval"] = _seconds(raw["expire_interval"], "expire_interval")
        if "commit_interval" in raw:
            kwargs["commit_interval"] = _seconds(raw["commit_interval"], "commit_interval", allow_zero=True)
        if "dbfile" in raw:
            kwargs["dbfile"] = _dbfile(raw["dbfile"], "dbfile")
        if "map_kind" in raw:
            kwargs["map_kind"] = _kind(raw["map_kind"], "map_kind")
        if "output" in raw:
            if not isinstance(raw["output"], list):
                raise ConfigError("output: expected [[output]] tables")
            kwargs["outputs"] = tuple(_output(item, f"output[{i}]") for i, item in enumerate(raw["output"]))
        if "map_value" in raw:
            kwargs["map_value"] = _map_value(raw["map_value"])
        if "patterns" in raw:
            kwargs["patterns"] = _patterns(raw["patterns"])
        if "pattern" in raw:
            kwargs["extra_patterns"] = _extra_patterns(raw["pattern"])
        if "authorise_loopback" in raw:
            kwargs["authorise_loopback"] = _bool(raw["authorise_loopback"], "authorise_loopback")
        if "authorise_link_local" in raw:
            kwargs["authorise_link_local"] = _bool(raw["authorise_link_local"], "authorise_link_local")
        if "mynetworks" in raw:
            value = raw["mynetworks"]
            if value in ("postconf", "none"):
                kwargs["mynetworks"] = value
            elif isinstance(value, list) and not value:
                kwargs["mynetworks"] = ()
            elif isinstance(value, list):
                kwargs["mynetworks"] = _networks(value, "mynetworks")
            else:
                raise ConfigError('mynetworks: expected "postconf", "none" or a list of networks')
        if "never" in raw:
            kwargs["never"] = _networks(raw["never"], "never") if raw["never"] != [] else ()
        if "insecure_remote" in raw:
            kwargs["insecure_remote"] = _bool(raw["insecure_remote"], "insecure_remote")
        if "max_frame" in raw:
            kwargs["max_frame"] = _int(raw["max_frame"], "max_frame", 480, 16 * 1024 * 1024)
        if "listen" in raw:
            kwargs["listen"] = _listeners(raw["listen"])
        if "max_connections" in raw:
            kwargs["max_connections"] = _int(raw["max_connections"], "max_connections", 0, 1_000_000)
        if "max_connections_per_peer" in raw:
            kwargs["max_connections_per_peer"] = _int(
                raw["max_connections_per_peer"], "max_connections_per_peer", 0, 1_000_000)
        if "idle_timeout" in raw:
            kwargs["idle_timeout"] = _seconds(raw["idle_timeout"], "idle_timeout", allow_zero=True)
        if "udp_rate" in raw:
            kwargs["udp_rate"] = _rate(raw["udp_rate"], "udp_rate")
        if "udp_receive_buffer" in raw:
            kwargs["udp_receive_buffer"] = _int(raw["udp_receive_buffer"], "udp_receive_buffer", 0, 1 << 30)
        if "socketmap" in raw:
            if not isinstance(raw["socketmap"], list):
                raise ConfigError("socketmap: expected [[socketmap]] tables")
            kwargs["socketmap"] = tuple(
                _socketmap(item, f"socketmap[{i}]") for i, item in enumerate(raw["socketmap"])
            )
        if "metrics" in raw:
            kwargs["metrics"] = _metrics(raw["metrics"], "metrics")
        if "max_tracked" in raw:
            kwargs["max_tracked"] = _int(raw["max_tracked"], "max_tracked", 1, 100_000_000)
        if "logout_tracking" in raw:
            kwargs["logout_tracking"] = _bool(raw["logout_tracking"], "logout_tracking")
        if "max_session" in raw:
            kwargs["max_session"] = _seconds(raw["max_session"], "max_session")
        if "max_pending" in raw:
            kwargs["max_pending"] = _int(raw["max_pending"], "max_pending", 1, 10_000_000)
        if "pending_age" in raw:
            kwargs["pending_age"] = _seconds(raw["pending_age"], "pending_age")
        return cls(**kwargs).checked()

    def all_outputs(self) -> tuple[OutputSpec, ...]:
        """Every map to write: the one at dbfile first, then the [[output]] ones."""
        return (OutputSpec(self.map_kind, self.dbfile, self.map_value), *self.outputs)

    def override(
        self,
        *,
        grace: str | float | None = None,
        dbfile: str | None = None,
        listen: Sequence[Listener] = (),
        allow: Sequence[str] = (),
        socketmap: Sequence[SocketmapListener] = (),
        metrics: str | None = None,
    ) -> Config:
        """Return a copy with command-line overrides applied, checked like the file's values."""
        changes: dict[str, Any] = {}
        if grace is not None:
            if isinstance(grace, str):
                try:
                    grace = float(grace)
                except ValueError:
                    raise ConfigError(f"--grace: expected seconds, got {grace!r}") from None
            changes["grace"] = _seconds(grace, "--grace")
        if dbfile is not None:
            changes["dbfile"] = _dbfile(dbfile, "--dbfile")
        if listen:
            changes["listen"] = tuple(listen)
        if metrics is not None:
            changes["metrics"] = _metrics(metrics, "--metrics")
        if socketmap:  # enables more socketmaps; the file's stay
            changes["socketmap"] = self.socketmap + tuple(socketmap)
        if allow:
            networks = _networks(list(allow), "--allow")
            changes["listen"] = tuple(
                attrs.evolve(listener, allow=networks) for listener in changes.get("listen", self.listen)
            )
        return attrs.evolve(self, **changes).checked()

    def checked(self) -> Config:
        """Check rules that tie several settings together; return self."""
        if self.expire_interval >= self.grace:
            raise ConfigError(
                f"expire_interval ({self.expire_interval:g} s) must be below "
                f"grace ({self.grace:g} s)"
            )
        if self.commit_interval > 0.5:
            raise ConfigError(
                f"commit_interval ({self.commit_interval:g} s) must be at most 0.5 s: "
                "a client that just logged in must be able to relay within a second"
            )
        if not self.listen:
            raise ConfigError("listen: at least one listener is needed")
        if self.metrics is not None and not ipaddress.ip_address(self.metrics[0]).is_loopback \
                and not self.insecure_remote:
            raise ConfigError("metrics: serves on loopback only unless insecure_remote = true")
        for sm in self.socketmap:
            remote = sm.host is not None and not ipaddress.ip_address(sm.host).is_loopback
            wide = [n for n in sm.allow if not is_loopback_only(parse_network(n))]
            if (remote or wide) and not self.insecure_remote:
                raise ConfigError(
                    f"socketmap {sm}: answers only on loopback or a UNIX socket unless "
                    "insecure_remote = true (it tells anyone who asks which clients may relay)"
                )
        seen: set[tuple[str, str, int]] = set()
        for listener in self.listen:
            networks = [parse_network(n) for n in listener.allow]
            world = [str(n) for n in networks if n.prefixlen == 0]
            if world and not self.insecure_remote:
                raise ConfigError(
                    f"listen {listener}: allow lists {', '.join(world)}, i.e. the whole world; "
                    "list the networks of your POP/IMAP servers, or set insecure_remote = true"
                )
            remote_nets = [str(n) for n in networks if not is_loopback_only(n)]
            if remote_nets and listener.tls_cert is None and not self.insecure_remote:
                raise ConfigError(
                    f"listen {listener}: allow lists {', '.join(remote_nets)}, but this is plain "
                    f"{listener.protocol.upper()}: anyone who can send one forged login line "
                    "(UDP sources are trivially spoofed) can relay spam through your mail "
                    "server. Forward over TLS with client certificates instead, or set "
                    "insecure_remote = true if the network path is trusted."
                )
            key = (listener.protocol, listener.host, listener.port)
            if key in seen and listener.port != 0:
                raise ConfigError(f"listen: {listener} is given twice")
            seen.add(key)
        return self


def load(path: str) -> Config:
    """Read and validate a TOML config file."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    try:
        return Config.from_mapping(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def parse_hostport(text: str, protocol: str) -> Listener:
    """Parse ``HOST:PORT`` or ``[V6]:PORT`` from the command line into a Listener."""
    host, port = _split_hostport(text, f"--{protocol}")
    return _listener({"protocol": protocol, "host": host, "port": port}, f"--{protocol}")


def parse_socketmap(text: str) -> SocketmapListener:
    """Parse ``--socketmap HOST:PORT`` (or ``[V6]:PORT``)."""
    host, port = _split_hostport(text, "--socketmap")
    return _socketmap({"host": host, "port": port}, "--socketmap")


def _split_hostport(text: str, option: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{option} {text!r}: expected HOST:PORT or [IPV6]:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{option} {text!r}: write IPv6 addresses as [ADDR]:PORT")
    if not port.isdigit():
        raise ConfigError(f"{option} {text!r}: port must be a number")
    return host, int(port)


def _seconds(value: Any, key: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}: must be a positive number of seconds, got {value!r}")
    return float(value)


def _rate(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{key}: expected a rate per second (0 = unlimited), got {value!r}")
    return float(value)


def _int(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low} and {high}, got {value}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _dbfile(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a path (without .db), got {value!r}")
    if value.endswith(".db"):
        raise ConfigError(f"{key}: give the path without '.db' (Postfix adds it): {value!r}")
    if "\0" in value:
        raise ConfigError(f"{key}: path contains a NUL byte")
    return value


def _map_value(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"map_value: expected a non-empty string, got {value!r}")
    if any(c in value for c in "\0\r\n"):
        raise ConfigError("map_value: must not contain NUL or line breaks")
    return value


def _patterns(value: Any) -> tuple[str, ...] | str:
    if value == "all":
        return "all"
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f'patterns: expected "all" or a list of names, got {value!r}')
    names = []
    for name in value:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"patterns: expected pattern names, got {name!r}")
        names.append(name)
    if not names:
        raise ConfigError("patterns: the list is empty; nothing would ever authorise")
    return tuple(names)


def _extra_patterns(value: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError("pattern: expected [[pattern]] tables")
    return tuple(value)


def _listeners(value: Any) -> tuple[Listener, ...]:
    if not isinstance(value, list):
        raise ConfigError("listen: expected [[listen]] tables")
    return tuple(_listener(item, f"listen[{i}]") for i, item in enumerate(value))


def _listener(item: Any, where: str) -> Listener:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: expected a table with protocol, host, port")
    unknown = sorted(set(item) - set(_LISTENER_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(_LISTENER_KEYS)})")
    protocol = item.get("protocol")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{where}.protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    host = item.get("host", "127.0.0.1")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{where}.host: expected an IPv4 or IPv6 address literal, got {host!r}") from None
    if "port" not in item:
        raise ConfigError(f"{where}.port: missing")
    port = _int(item["port"], f"{where}.port", 0, 65535)
    allow = _networks(item["allow"], f"{where}.allow") if "allow" in item else LOOPBACK
    hostnames = tuple(h.lower() for h in _strings(item.get("hostnames", []), f"{where}.hostnames"))
    tls: dict[str, Any] = {}
    # A "relp" listener with the tls_* files is RELP over TLS; it takes all or none.
    with_tls = protocol == "tls" or (protocol == "relp" and any(
        k in item for k in ("tls_cert", "tls_key", "tls_ca", "tls_peers")))
    for key in ("tls_cert", "tls_key", "tls_ca"):
        if key in item:
            if protocol not in ("tls", "relp"):
                raise ConfigError(f"{where}.{key}: only a listener with protocol = \"tls\" or \"relp\" takes it")
            if not isinstance(item[key], str) or not item[key]:
                raise ConfigError(f"{where}.{key}: expected a path to a PEM file")
            tls[key] = item[key]
        elif with_tls:
            raise ConfigError(f"{where}.{key}: a TLS listener needs it (PEM file)")
    if "tls_peers" in item:
        if protocol not in ("tls", "relp"):
            raise ConfigError(f"{where}.tls_peers: only a listener with protocol = \"tls\" or \"relp\" takes it")
        tls["tls_peers"] = tuple(_strings(item["tls_peers"], f"{where}.tls_peers"))
    return Listener(protocol, str(address), port, allow, hostnames, **tls)


def _kind(value: Any, key: str) -> str:
    if value not in MAP_KINDS:
        raise ConfigError(f"{key}: expected one of {', '.join(MAP_KINDS)}, got {value!r}")
    return str(value)


def _output(item: Any, where: str) -> OutputSpec:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: expected a table with kind and path")
    if item.get("kind") == PGSQL_KIND:
        return _pgsql_output(item, where)
    unknown = sorted(set(item) - {"kind", "path", "value"})
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r} (known: kind, path, value)")
    if "path" not in item or not isinstance(item["path"], str) or not item["path"]:
        raise ConfigError(f"{where}.path: expected the map's path (as the MTA names it)")
    value = item.get("value")
    if value is not None:
        value = _map_value(value)
    return OutputSpec(_kind(item.get("kind"), f"{where}.kind"), item["path"], value)


def _pgsql_output(item: Mapping[str, Any], where: str) -> OutputSpec:
    # path is derived ("pgsql:TABLE"); it is accepted only as that, which is
    # what `pbsyslog dumpconfig` writes back.
    unknown = sorted(set(item) - {"kind", "dsn", "table", "source_host"}
                     - ({"path"} if item.get("path") == f"pgsql:{item.get('table', 'pop_before_smtp')}" else set()))
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r} "
                          "(known for kind pgsql: dsn, kind, source_host, table)")
    dsn = item.get("dsn")
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConfigError(f'{where}.dsn: expected a libpq connection string, '
                          'e.g. "host=db.example.net dbname=pbsyslog user=pbsyslog"')
    table = item.get("table", "pop_before_smtp")
    if not isinstance(table, str) or not _TABLE_NAME.match(table):
        raise ConfigError(f"{where}.table: expected a plain table name (letters, digits, _; schema.table), "
                          f"got {table!r}")
    source_host = item.get("source_host")
    if source_host is not None and (not isinstance(source_host, str) or not source_host):
        raise ConfigError(f"{where}.source_host: expected a non-empty name, got {source_host!r}")
    return OutputSpec(PGSQL_KIND, f"pgsql:{table}", None, dsn=dsn, table=table, source_host=source_host)


def _metrics(value: Any, key: str) -> tuple[str, int] | None:
    if value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f'{key}: expected "HOST:PORT" (or "" for none), got {value!r}')
    host, port = _split_hostport(value, key)
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        raise ConfigError(f"{key}: expected an IPv4 or IPv6 address literal, got {host!r}") from None
    if port > 65535:
        raise ConfigError(f"{key}: port out of range")
    return host, port


def _socketmap(item: Any, where: str) -> SocketmapListener:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: expected a table with host and port, or path")
    known = ("allow", "host", "names", "path", "port")
    unknown = sorted(set(item) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(known)})")
    names = tuple(_strings(item.get("names", []), f"{where}.names"))
    allow = _networks(item["allow"], f"{where}.allow") if "allow" in item else LOOPBACK
    if "path" in item:
        if "host" in item or "port" in item:
            raise ConfigError(f"{where}: give either path (UNIX socket) or host and port")
        if not isinstance(item["path"], str) or not item["path"].startswith("/"):
            raise ConfigError(f"{where}.path: expected an absolute path for the UNIX socket")
        return SocketmapListener(path=item["path"], names=names, allow=allow)
    try:
        host = str(ipaddress.ip_address(item.get("host", "127.0.0.1")))
    except ValueError:
        raise ConfigError(f"{where}.host: expected an IPv4 or IPv6 address literal") from None
    if "port" not in item:
        raise ConfigError(f"{where}.port: missing")
    return SocketmapListener(host=host, port=_int(item["port"], f"{where}.port", 0, 65535),
                             names=names, allow=allow)


def _strings(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key}: expected a list of non-empty strings")
    return value


def _networks(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: expected a non-empty list of networks such as \"192.0.2.0/28\"")
    networks = []
    for item in value:
        try:
            networks.append(str(parse_network(item)))
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {item!r} is not an address or CIDR network") from None
    return tuple(networks)
