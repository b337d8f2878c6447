"""Configuration: one frozen ``Config`` built from a TOML mapping, and written back to one.

Contract: each setting of the file is declared once, as a ``Config`` field
made by ``setting()``: its default, the converter that checks a raw TOML
value and turns it into the field's value, its TOML key when that is not
the field's name, and its one-line doc (README.rst's "Configuration
reference" table has the same line; a test compares them).
``Config.from_mapping(raw)`` is pure and validates everything a running
service would trip over later (types, ranges, address literals, unknown
keys), key by key in declaration order, raising ``ConfigError`` with the
offending key named.  ``Config.to_toml_mapping()`` is the way back: plain
TOML values that ``from_mapping`` turns into an equal Config again.
``load(path)`` is the only function here that touches a file.  Nothing in
this module binds a port or opens the map: a bad config must stop the
process before that.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from pbsyslog.addresses import bracketed
from pbsyslog.inputs.senders import LOOPBACK, is_loopback_only, parse_network

PROTOCOLS = ("udp", "tcp", "tls", "relp", "unix")
_LISTENER_KEYS = ("allow", "host", "hostnames", "port", "protocol", "tls_ca", "tls_cert", "tls_key", "tls_peers")
# A "unix" listener: a datagram socket whose senders the kernel names (uid).
_UNIX_LISTENER_KEYS = ("hostnames", "path", "protocol", "uids")

_D = TypeVar("_D")
_T = TypeVar("_T")
_R = TypeVar("_R")


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
    # protocol "unix" only: the socket's path, and the user ids whose
    # datagrams it takes (the kernel's SCM_CREDENTIALS, not anything the
    # sender wrote); host and port are unused.
    path: str | None = None
    uids: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.path is not None:
            return f"{self.protocol} {self.path}"
        host = bracketed(self.host)
        return f"{self.protocol} {host}:{self.port}"

    @property
    def binding(self) -> tuple[str, str, int, str | None]:
        """Where it listens: a reload can change its trust settings, never this."""
        return self.protocol, self.host, self.port, self.path


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
        host = bracketed(self.host) if self.host else self.host
        return f"tcp {host}:{self.port}"


@attrs.frozen
class PolicyListener:
    """Where pbsyslog answers Postfix's ``check_policy_service`` (policy delegation) from live state."""

    host: str | None = None
    port: int = 0
    path: str | None = None  # a UNIX socket instead of host/port
    allow: tuple[str, ...] = LOOPBACK

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix {self.path}"
        host = bracketed(self.host) if self.host else self.host
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


# --- settings: one Config field per key of the file ------------------------


def to_toml_value(value: Any) -> Any:
    """attrs records (less their defaults), tuples and mappings as plain dicts and lists."""
    if attrs.has(type(value)):
        # A record inside Config (a listener) is written without the fields
        # it has by default: some may only be given in some cases (TLS
        # settings on a TLS listener), and None cannot be written at all.
        plain = {}
        # A "unix" listener is written with its own keys only (no host, port or allow).
        only = _UNIX_LISTENER_KEYS if isinstance(value, Listener) and value.protocol == "unix" else None
        for field in attrs.fields(type(value)):
            if only is not None and field.name not in only:
                continue
            item = getattr(value, field.name)
            if item is None or (field.default is not attrs.NOTHING and item == field.default):
                continue
            plain[field.name] = to_toml_value(item)
        return plain
    if isinstance(value, Mapping):
        return {k: to_toml_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_toml_value(v) for v in value]
    return value


@attrs.frozen
class Setting:
    """One key of the file: how ``Config.from_mapping`` reads it and ``Config.to_toml_mapping`` writes it."""

    default: Any  # the field's default
    convert: Callable[[Any, str], Any]  # (TOML value, key) -> the field's value; raises ConfigError
    doc: str  # what it does, in one line: its row of README.rst's reference table
    key: str = ""  # the TOML key ("": the field's name)
    dump: Callable[[Any], Any] = to_toml_value  # field value -> TOML value (None: the key is left out)
    name: str = ""  # the Config field (filled in by SETTINGS)


_SETTING = "pbsyslog.setting"  # the attrs metadata key that holds a field's Setting


def setting(default: _D, convert: Callable[[Any, str], _T], doc: str, *, key: str = "",
            dump: Callable[[Any], Any] = to_toml_value) -> _D | _T:
    """Declare a Config field that is a key of the file (see Setting).

    The type checker holds both the default and what ``convert`` returns to
    the field's annotation.
    """
    return attrs.field(default=default, metadata={_SETTING: Setting(default, convert, doc, key, dump)})


# --- converters: (raw TOML value, key or where) -> checked value -------------


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


def _map_value(value: Any, key: str = "map_value") -> str:
    # An [[output]]'s value is checked with this too, and named map_value then.
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    if any(c in value for c in "\0\r\n"):
        raise ConfigError(f"{key}: must not contain NUL or line breaks")
    return value


def _patterns(value: Any, key: str) -> tuple[str, ...] | str:
    if value == "all":
        return "all"
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f'{key}: expected "all" or a list of names, got {value!r}')
    names = []
    for name in value:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{key}: expected pattern names, got {name!r}")
        names.append(name)
    if not names:
        raise ConfigError(f"{key}: the list is empty; nothing would ever authorise")
    return tuple(names)


def _extra_patterns(value: Any, key: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError(f"{key}: expected [[{key}]] tables")
    return tuple(value)


def _tables(value: Any, key: str, item: Callable[[Any, str], _R]) -> tuple[_R, ...]:
    """An array of tables ([[listen]], [[output]], [[socketmap]]): each one read by ``item``."""
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected [[{key}]] tables")
    return tuple(item(table, f"{key}[{i}]") for i, table in enumerate(value))


def _listener(item: Any, where: str) -> Listener:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: expected a table with protocol, host, port")
    if item.get("protocol") == "unix":
        return _unix_listener(item, where)
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


def _unix_listener(item: Mapping[str, Any], where: str) -> Listener:
    unknown = sorted(set(item) - set(_UNIX_LISTENER_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r} for protocol \"unix\" "
                          f"(known: {', '.join(_UNIX_LISTENER_KEYS)})")
    path = item.get("path")
    if not isinstance(path, str) or not path or path.endswith("/"):
        raise ConfigError(f"{where}.path: expected the path of the UNIX socket to create")
    uids = item.get("uids", [0])
    if not isinstance(uids, list) or not uids or not all(
            isinstance(u, int) and not isinstance(u, bool) and 0 <= u < 2**32 - 1 for u in uids):
        raise ConfigError(f"{where}.uids: expected a non-empty list of user ids (numbers, e.g. [0] for root)")
    hostnames = tuple(h.lower() for h in _strings(item.get("hostnames", []), f"{where}.hostnames"))
    return Listener("unix", "", 0, (), hostnames, path=path, uids=tuple(sorted(set(uids))))


IPV6_FILE_MAPS = ("exact-only", "allow-parent-match")


def _ipv6_file_maps(value: Any, key: str) -> str:
    if value not in IPV6_FILE_MAPS:
        raise ConfigError(f"{key}: expected one of {', '.join(IPV6_FILE_MAPS)}, got {value!r}")
    return str(value)


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


def _hostport_text(value: tuple[str, int] | None) -> str | None:
    """The way back from _metrics: "HOST:PORT" or "[V6]:PORT" (None stays None)."""
    if value is None:
        return None
    host, port = value
    return f"{bracketed(host)}:{port}"


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
    place = _service_place(item, where, ("allow", "host", "names", "path", "port"))
    names = tuple(_strings(item.get("names", []), f"{where}.names"))
    return SocketmapListener(names=names, **place)


def _policy(item: Any, where: str) -> PolicyListener:
    return PolicyListener(**_service_place(item, where, ("allow", "host", "path", "port")))


def _service_place(item: Any, where: str, known: tuple[str, ...]) -> dict[str, Any]:
    """host/port (a loopback address by default) or path, and allow, of a [[socketmap]] or [[policy]] table."""
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: expected a table with host and port, or path")
    unknown = sorted(set(item) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(known)})")
    allow = _networks(item["allow"], f"{where}.allow") if "allow" in item else LOOPBACK
    if "path" in item:
        if "host" in item or "port" in item:
            raise ConfigError(f"{where}: give either path (UNIX socket) or host and port")
        if not isinstance(item["path"], str) or not item["path"].startswith("/"):
            raise ConfigError(f"{where}.path: expected an absolute path for the UNIX socket")
        return {"path": item["path"], "allow": allow}
    try:
        host = str(ipaddress.ip_address(item.get("host", "127.0.0.1")))
    except ValueError:
        raise ConfigError(f"{where}.host: expected an IPv4 or IPv6 address literal") from None
    if "port" not in item:
        raise ConfigError(f"{where}.port: missing")
    return {"host": host, "port": _int(item["port"], f"{where}.port", 0, 65535), "allow": allow}


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


def _optional_networks(value: Any, key: str) -> tuple[str, ...]:
    """Like _networks, but [] is allowed (none)."""
    return _networks(value, key) if value != [] else ()


def _mynetworks(value: Any, key: str) -> tuple[str, ...] | str:
    if value in ("postconf", "none"):
        return str(value)
    if isinstance(value, list) and not value:
        return ()
    if isinstance(value, list):
        return _networks(value, key)
    raise ConfigError(f'{key}: expected "postconf", "none" or a list of networks')


@attrs.frozen
class Config:
    """Everything the service needs to run, validated.

    Every field is a key of the file, declared with ``setting(default,
    convert, doc)`` (see Setting), and nothing else needs to know it:
    ``from_mapping`` and ``to_toml_mapping`` work from ``SETTINGS``.  Keys
    are checked in the order declared here, so a file with several bad keys
    is refused for the first of them in this order (the order of the checks
    before they became this table: moving a field changes which error such
    a file gets, and the order of ``pbsyslog dumpconfig``'s keys).
    """

    grace: float = setting(1800.0, _seconds, "seconds a client may relay after its last login (1800)")
    expire_interval: float = setting(10.0, _seconds, "seconds between expiry ticks (10)")
    commit_interval: float = setting(
        0.25, partial(_seconds, allow_zero=True), "least seconds between two map commits in a burst (0.25)")
    dbfile: str = setting(
        "var/pop-before-smtp", _dbfile, "the map, without ``.db``; state, lock and control socket beside it")
    map_kind: str = setting(
        "postfix-hash", _kind,
        "flavour of the map at ``dbfile``: postfix-hash/btree, sendmail-access/popauth, exim-dbm")
    outputs: tuple[OutputSpec, ...] = setting(  # more maps, written with the same changes
        (), partial(_tables, item=_output),
        "``[[output]]`` tables: more maps (kind, path, value), incl. ``pgsql`` (dsn, table)", key="output")
    map_value: str = setting("OK", _map_value, "value stored per IP (``OK``)")
    patterns: tuple[str, ...] | str = setting(
        "all", _patterns, 'enabled pattern groups or entries, or ``"all"``')
    extra_patterns: tuple[Mapping[str, Any], ...] = setting(
        (), _extra_patterns, "``[[pattern]]`` tables: your own patterns, with samples", key="pattern")
    authorise_loopback: bool = setting(False, _bool, "let loopback clients be authorised (tests only)")
    authorise_link_local: bool = setting(False, _bool, "let link-local clients be authorised")
    # Postfix's mynetworks: "postconf" (ask the local Postfix at start-up),
    # "none", or a list of networks.  Clients there relay anyway: never added.
    mynetworks: tuple[str, ...] | str = setting(
        "postconf", _mynetworks, '``"postconf"`` (ask Postfix), ``"none"``, or networks never added')
    never: tuple[str, ...] = setting((), _optional_networks, "networks never authorised")
    insecure_remote: bool = setting(
        False, _bool, "allow plain UDP/TCP (or the world) from non-loopback senders")
    max_frame: int = setting(
        65536, partial(_int, low=480, high=16 * 1024 * 1024), "longest frame accepted (65536)")
    listen: tuple[Listener, ...] = setting(
        DEFAULT_LISTENERS, partial(_tables, item=_listener),
        "``[[listen]]`` tables: protocol (udp, tcp, tls, relp, unix), host, port, allow, hostnames, tls_*; path, uids")
    max_connections: int = setting(
        256, partial(_int, low=0, high=1_000_000), "TCP connections per listener (256)")
    max_connections_per_peer: int = setting(
        32, partial(_int, low=0, high=1_000_000), "TCP connections per sender (32)")
    idle_timeout: float = setting(
        86400.0, partial(_seconds, allow_zero=True), "seconds a silent TCP connection stays open (86400)")
    first_frame_timeout: float = setting(
        10.0, partial(_seconds, allow_zero=True),
        "seconds a new TCP/TLS/RELP connection has to deliver its first frame, TLS handshake included (10)")
    udp_rate: float = setting(20000.0, _rate, "datagrams per second per sender (20000)")
    udp_receive_buffer: int = setting(  # bytes asked for each UDP socket's receive queue
        32 << 20, partial(_int, low=0, high=1 << 30),
        "bytes of kernel queue per UDP socket (33554432; 0: OS default)")
    socketmap: tuple[SocketmapListener, ...] = setting(
        (), partial(_tables, item=_socketmap), "``[[socketmap]]`` tables: host/port or path, names, allow")
    policy: tuple[PolicyListener, ...] = setting(
        (), partial(_tables, item=_policy),
        "``[[policy]]`` tables: host/port or path, allow (Postfix ``check_policy_service``)")
    # Postfix's access maps also match a key as a parent network: the IPv6
    # key 2001:db8::5 would authorise 2001:db8::5:1 too.  "exact-only" keeps
    # such keys out of the file and SQL maps (socketmap and policy answer
    # for them); "allow-parent-match" writes them anyway.
    # Only the daemon can authorise: a login needs an origin (STRUCTURED-DATA
    # written by the forwarding rsyslog from imuxsock's trusted properties)
    # that its group's [[origin]] rule allows.  Off by default: it needs the
    # rsyslog side (conf/rsyslog/pbsyslog-origin.conf).
    require_origin: bool = setting(
        False, _bool, "logins authorise only with an origin their group's ``[[origin]]`` rule allows")
    extra_origins: tuple[Mapping[str, Any], ...] = setting(
        (), _extra_patterns, "``[[origin]]`` tables: group, uids, exe (replace the built-in rule of that group)",
        key="origin")
    ipv6_file_maps: str = setting(
        "exact-only", _ipv6_file_maps,
        "``exact-only``: no IPv6 key in a file/SQL map that Postfix would match for other clients")
    metrics: tuple[str, int] | None = setting(  # (host, port) of the Prometheus endpoint
        None, _metrics, '``"HOST:PORT"`` of the Prometheus endpoint, ``""`` for none', dump=_hostport_text)
    max_tracked: int = setting(
        1_000_000, partial(_int, low=1, high=100_000_000), "most IPs authorised at once (1000000); never evicts")
    # Logout tracking: an open session keeps its IP authorised (at most
    # max_session seconds); two-line logins: connect lines remembered.
    logout_tracking: bool = setting(
        True, _bool, "an open POP/IMAP session keeps its IP; the grace starts at logout")
    max_session: float = setting(
        86400.0, _seconds, "longest a session counts as open without its logout (86400)")
    max_pending: int = setting(
        10_000, partial(_int, low=1, high=10_000_000), "connect lines kept for two-line logins (10000)")
    pending_age: float = setting(300.0, _seconds, "seconds a connect line waits for its login line (300)")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Config:
        """Build a Config from a parsed TOML document; raise ConfigError naming any bad key."""
        unknown = sorted(set(raw) - SETTINGS.keys())
        if unknown:
            raise ConfigError(
                f"unknown setting {unknown[0]!r} (known: {', '.join(sorted(SETTINGS))})"
            )
        kwargs = {s.name: s.convert(raw[key], key) for key, s in SETTINGS.items() if key in raw}
        return cls(**kwargs).checked()

    def to_toml_mapping(self) -> dict[str, Any]:
        """This config as plain TOML values (key -> value) that ``from_mapping`` turns back into it.

        A key whose value cannot be written (None) is left out, and so is an
        empty list where the default is an empty list too.
        """
        raw: dict[str, Any] = {}
        for key, s in SETTINGS.items():
            value = s.dump(getattr(self, s.name))
            if value is None or (value == [] and s.dump(s.default) == []):
                continue
            raw[key] = value
        return raw


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
        for kind, places in (("socketmap", self.socketmap), ("policy", self.policy)):
            for sm in places:
                remote = sm.host is not None and not ipaddress.ip_address(sm.host).is_loopback
                wide = [n for n in sm.allow if not is_loopback_only(parse_network(n))]
                if (remote or wide) and not self.insecure_remote:
                    raise ConfigError(
                        f"{kind} {sm}: answers only on loopback or a UNIX socket unless "
                        "insecure_remote = true (it tells anyone who asks which clients may relay)"
                    )
        seen: set[tuple[str, str, int, str | None]] = set()
        for listener in self.listen:
            if listener.protocol == "unix":
                if listener.binding in seen:
                    raise ConfigError(f"listen: {listener} is given twice")
                seen.add(listener.binding)
                continue
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
            if listener.binding in seen and listener.port != 0:
                raise ConfigError(f"listen: {listener} is given twice")
            seen.add(listener.binding)
        return self


def _settings() -> Mapping[str, Setting]:
    """TOML key -> Setting (with its key and field name filled in) of every Config field, in declaration order."""
    table: dict[str, Setting] = {}
    for field in attrs.fields(Config):
        s = field.metadata[_SETTING]
        key = s.key or field.name
        table[key] = attrs.evolve(s, key=key, name=field.name)
    return MappingProxyType(table)


SETTINGS = _settings()


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

